//go:build tools

// Package controlplane pins the commands this module builds.
package controlplane

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
