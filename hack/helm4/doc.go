// Package helm4 holds no code, only a test: Helm 4's Go library renders the
// charts of manifests/charts from disk to the same bytes as dist/ (rendered
// with Helm 3 by the root module) and rejects the same bad values. A module
// of its own, so that Helm 4's requirements never reach the root module.
package helm4
