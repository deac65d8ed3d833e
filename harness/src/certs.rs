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
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "idlelab run CA");
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec![SERVER_NAME.to_string()])?;
    params.distinguished_name.push(DnType::CommonName, SERVER_NAME);
    params.distinguished_name.push(DnType::OrganizationName, "idlelab");
    let cert = params.signed_by(&key, &issuer)?;
    Ok(RunCa { ca_pem: ca_cert.pem(), cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

/// A mesh CA for one cell: it issues every proxy's workload certificate, so that the
/// sidecars' Istio mTLS verifies as it would under istiod's CA.
pub struct MeshCa {
    pub ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl MeshCa {
    pub fn new() -> Result<MeshCa> {
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "idlelab mesh CA");
        let ca_cert = ca_params.self_signed(&ca_key)?;
        Ok(MeshCa { ca_pem: ca_cert.pem(), issuer: Issuer::new(ca_params, ca_key) })
    }

    /// A workload certificate for a SPIFFE identity (URI SAN), as Istio's CA would issue it:
    /// (certificate chain, key).
    pub fn issue(&self, spiffe_uri: &str) -> Result<(String, String)> {
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.subject_alt_names = vec![rcgen::SanType::URI(rcgen::string::Ia5String::try_from(spiffe_uri)?)];
        p.distinguished_name.push(DnType::OrganizationName, "idlelab");
        let cert = p.signed_by(&key, &self.issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
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

    #[test]
    fn the_mesh_ca_issues_spiffe_workload_certificates() {
        let ca = super::MeshCa::new().unwrap();
        let (a, key) = ca.issue("spiffe://cluster.local/ns/x/sa/default").unwrap();
        let (b, _) = ca.issue("spiffe://cluster.local/ns/y/sa/default").unwrap();
        assert!(a.starts_with("-----BEGIN CERTIFICATE-----") && key.contains("PRIVATE KEY"));
        assert_ne!(a, b);
    }
}
