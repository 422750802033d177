package discovery

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

func ptr[T any](v T) *T { return &v }

func metav1ObjectMeta(ns, name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Namespace: ns, Name: name}
}
