// Package charttest tests deploy/helm/kailash and deploy/compose.yaml: the
// chart is linted and rendered by the pinned helm ($HELM, `make chart-test`
// builds it), every rendered object is decoded strictly into its
// Kubernetes API type, and the invariants the chart promises are checked.
// A module of its own, so k8s.io stays out of the product's go.mod.
package charttest
