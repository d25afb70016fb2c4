// Command images builds the OCI images of l5d-tunnel's shipped binaries
// without a container engine (`make images`): each binary is compiled static
// for every platform, laid on an empty base with go-containerregistry, and
// written as a multi-platform OCI image layout plus one `docker load`-able
// tarball per platform.
//
// The image references are not configured here: they are read from the
// rendered install files (dist/*.yaml), so the Deployments' `image:` fields
// stay the one owner of the registry, repository and version.
//
// This is a build tool, not a shipped binary (nothing imports it), so it
// lives under hack/ in its own module: go-containerregistry's requirements would otherwise raise the
// versions of golang.org/x/sys, x/sync, oauth2 and pflag that the shipped
// binaries link.
package main
