package main

// Changes while serving, as a controller would make them on a cluster: a Deployment scaled up
// makes the endpoint controller rewrite the Service's EndpointSlice. Each line on stdin is one
// change, {"apply": "<YAML of one Kubernetes object>"}; the object goes through the fake
// Kubernetes client Istio's controllers watch (an Update, or a Create when it is new), and
// Istio pushes what changes, as istiod would. Each line gets one answer on stdout:
// {"applied": "Kind namespace/name"} or {"error": "..."}.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	kubelib "istio.io/istio/pkg/kube"
)

type change struct {
	Apply string `json:"apply"`
}

// serveApplies reads changes from r until EOF, applying each to kube, answering on out.
func serveApplies(r io.Reader, kube kubernetes.Interface, out io.Writer) {
	lines := bufio.NewScanner(r)
	lines.Buffer(make([]byte, 1<<20), 16<<20)
	for lines.Scan() {
		if len(lines.Bytes()) == 0 {
			continue
		}
		answer := map[string]string{}
		if what, err := applyLine(lines.Bytes(), kube); err != nil {
			answer["error"] = err.Error()
		} else {
			answer["applied"] = what
		}
		line, _ := json.Marshal(answer)
		fmt.Fprintln(out, string(line))
	}
	if err := lines.Err(); err != nil {
		scope.Errorf("reading changes from stdin: %v", err)
	}
}

func applyLine(line []byte, kube kubernetes.Interface) (string, error) {
	var c change
	if err := json.Unmarshal(line, &c); err != nil || c.Apply == "" {
		return "", fmt.Errorf("expected {\"apply\": \"<YAML>\"}, got %q", line)
	}
	obj, _, err := kubelib.IstioCodec.UniversalDeserializer().Decode([]byte(c.Apply), nil, nil)
	if err != nil {
		return "", fmt.Errorf("not a Kubernetes object: %v", err)
	}
	ctx := context.Background()
	switch o := obj.(type) {
	case *discoveryv1.EndpointSlice:
		c := kube.DiscoveryV1().EndpointSlices(o.Namespace)
		return upsert("EndpointSlice", o.ObjectMeta,
			func() error { _, err := c.Update(ctx, o, metav1.UpdateOptions{}); return err },
			func() error { _, err := c.Create(ctx, o, metav1.CreateOptions{}); return err })
	case *corev1.Pod:
		c := kube.CoreV1().Pods(o.Namespace)
		return upsert("Pod", o.ObjectMeta,
			func() error { _, err := c.Update(ctx, o, metav1.UpdateOptions{}); return err },
			func() error { _, err := c.Create(ctx, o, metav1.CreateOptions{}); return err })
	case *corev1.Service:
		c := kube.CoreV1().Services(o.Namespace)
		return upsert("Service", o.ObjectMeta,
			func() error { _, err := c.Update(ctx, o, metav1.UpdateOptions{}); return err },
			func() error { _, err := c.Create(ctx, o, metav1.CreateOptions{}); return err })
	default:
		return "", fmt.Errorf("%T: only EndpointSlice, Pod and Service change while serving", obj)
	}
}

func upsert(kind string, m metav1.ObjectMeta, update, create func() error) (string, error) {
	err := update()
	if apierrors.IsNotFound(err) {
		err = create()
	}
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%s %s/%s", kind, m.Namespace, m.Name), nil
}
