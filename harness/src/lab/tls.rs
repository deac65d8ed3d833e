//! A certificate authority generated for one run, and the gateway's certificate.
//!
//! The probe trusts only this CA, so a TLS handshake that succeeds proves the connection
//! reached the lab's own gateway.

use anyhow::Result;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// The name the gateway's certificate is issued for, and the probe's SNI.
pub const SERVER_NAME: &str = "idlelab.test";

pub struct RunCa {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

pub fn generate() -> Result<RunCa> {
    generate_with(SERVER_NAME, false)
}

/// A CA and a workload certificate for a SPIFFE identity (URI SAN), as Istio's CA would
/// issue it to a sidecar.
pub fn generate_for(spiffe_uri: &str) -> Result<RunCa> {
    generate_with(spiffe_uri, true)
}

fn generate_with(subject: &str, uri: bool) -> Result<RunCa> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "idlelab run CA");
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let key = KeyPair::generate()?;
    let mut params = if uri {
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.subject_alt_names = vec![rcgen::SanType::URI(rcgen::string::Ia5String::try_from(subject)?)];
        p
    } else {
        let mut p = CertificateParams::new(vec![subject.to_string()])?;
        p.distinguished_name.push(DnType::CommonName, subject);
        p
    };
    params.distinguished_name.push(DnType::OrganizationName, "idlelab");
    let cert = params.signed_by(&key, &issuer)?;
    Ok(RunCa { ca_pem: ca_cert.pem(), cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

#[cfg(test)]
mod tests {
    #[test]
    fn generates_a_ca_and_a_server_certificate() {
        let ca = super::generate().unwrap();
        assert!(ca.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(ca.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(ca.key_pem.contains("PRIVATE KEY"));
        assert_ne!(ca.ca_pem, ca.cert_pem);
    }
}
