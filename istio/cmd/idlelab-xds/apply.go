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
		return upsert(ctx, kube.DiscoveryV1().EndpointSlices(o.Namespace), "EndpointSlice", o.ObjectMeta, o)
	case *corev1.Pod:
		return upsert(ctx, kube.CoreV1().Pods(o.Namespace), "Pod", o.ObjectMeta, o)
	case *corev1.Service:
		return upsert(ctx, kube.CoreV1().Services(o.Namespace), "Service", o.ObjectMeta, o)
	default:
		return "", fmt.Errorf("%T: only EndpointSlice, Pod and Service change while serving", obj)
	}
}

// typedClient is what client-go's typed clients (EndpointSlices, Pods, Services) share.
type typedClient[T any] interface {
	Update(context.Context, T, metav1.UpdateOptions) (T, error)
	Create(context.Context, T, metav1.CreateOptions) (T, error)
}

// upsert updates `o`, or creates it when it is new.
func upsert[T any](ctx context.Context, c typedClient[T], kind string, m metav1.ObjectMeta, o T) (string, error) {
	_, err := c.Update(ctx, o, metav1.UpdateOptions{})
	if apierrors.IsNotFound(err) {
		_, err = c.Create(ctx, o, metav1.CreateOptions{})
	}
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%s %s/%s", kind, m.Namespace, m.Name), nil
}
