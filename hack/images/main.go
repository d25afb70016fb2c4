package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
)

// binaries lists the images to build, one entry per shipped binary.
var binaries = []binary{
	{
		Name:        "tunnel",
		Package:     "./cmd/tunnel",
		VersionVar:  "github.com/l5d-tunnel/l5d-tunnel/internal/cli.Version",
		Description: "l5d-tunnel tunnel server and client: Linkerd multicluster over one outbound websocket",
	},
	{
		Name:        "webhook",
		Package:     "./cmd/webhook",
		VersionVar:  "github.com/l5d-tunnel/l5d-tunnel/internal/cli.Version",
		Description: "l5d-tunnel admission webhook: rewrites Linkerd multicluster Links to go through the tunnel",
	},
	{
		// The CLI has no Deployment: its reference takes the registry, owner
		// and tag the Deployments' images share.
		Name:        "linkerd-tunnel",
		Package:     "./cmd/linkerd-tunnel",
		VersionVar:  "github.com/l5d-tunnel/l5d-tunnel/internal/cli.Version",
		Description: "linkerd-tunnel: the Linkerd CLI extension that renders, uninstalls and checks l5d-tunnel",
	},
}

// binary is one shipped program and the image built from it.
type binary struct {
	Name        string // image and binary name; the entrypoint is /Name
	Package     string // Go package, relative to the repository root
	VersionVar  string // -X target stamped with the version, if the binary has one
	Description string // org.opencontainers.image.description
}

const usage = `images: build the OCI images of l5d-tunnel's binaries without a container engine.

Usage:
  go run ./hack/images [flags]        (from hack/images; 'make images' runs it)

Each binary is built with CGO_ENABLED=0 -trimpath for every --platforms entry and
laid on an empty base (no shell): the binary at /NAME (the entrypoint), the host's
CA bundle at /etc/ssl/certs/ca-certificates.crt, /etc/passwd and /etc/group with
user nonroot (65532), which the image runs as. Timestamps are SOURCE_DATE_EPOCH
(default: the last commit's time), so two builds of one commit give the same digests.

Image references (registry, repository, tag) are read from the Deployments in
--manifests (the rendered install files); the tag is also the version label and
the version stamped into the binaries (internal/cli.Version).

Output in --out, for each image NAME:
  NAME.oci/                  OCI image layout, one multi-platform index
                             (crane push --index, skopeo copy oci:..., kind load image-archive after tar)
  NAME_linux_ARCH.tar        docker load / kind load image-archive tarball, one per platform
  images.txt                 references and digests

Flags:
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("images", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		opts      options
		platforms string
		only      string
	)
	fs.StringVar(&opts.Root, "root", "", "repository root (default: the git top level of the working directory)")
	fs.StringVar(&opts.Out, "out", "", "output folder (default: ROOT/bin/images)")
	fs.StringVar(&opts.Manifests, "manifests", "", "folder of rendered manifests whose Deployments name the images (default: ROOT/dist)")
	fs.StringVar(&platforms, "platforms", "linux/amd64,linux/arm64", "comma-separated OS/ARCH list")
	fs.StringVar(&only, "only", "", "comma-separated subset of images to build (default: all of "+strings.Join(names(binaries), ",")+")")
	fs.StringVar(&opts.CACerts, "ca-certs", "/etc/ssl/certs/ca-certificates.crt", "CA bundle to install in the images")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "images: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	var err error
	if opts.Platforms, err = parsePlatforms(platforms); err != nil {
		fmt.Fprintf(stderr, "images: --platforms: %v\n", err)
		return 2
	}
	if opts.Binaries, err = selectBinaries(only); err != nil {
		fmt.Fprintf(stderr, "images: --only: %v\n", err)
		return 2
	}
	if opts.Root == "" {
		if opts.Root, err = gitOutput(ctx, ".", "rev-parse", "--show-toplevel"); err != nil {
			fmt.Fprintf(stderr, "images: --root not given and %v\n", err)
			return 2
		}
	}
	if opts.Out == "" {
		opts.Out = filepath.Join(opts.Root, "bin", "images")
	}
	if opts.Manifests == "" {
		opts.Manifests = filepath.Join(opts.Root, "dist")
	}
	opts.Log = stderr
	res, err := build(ctx, opts)
	if err != nil {
		fmt.Fprintf(stderr, "images: %v\n", err)
		return 1
	}
	fmt.Fprint(stdout, res.Summary())
	return 0
}

func names(bs []binary) []string {
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = b.Name
	}
	return out
}

func selectBinaries(only string) ([]binary, error) {
	if only == "" {
		return binaries, nil
	}
	var out []binary
	for _, n := range strings.Split(only, ",") {
		found := false
		for _, b := range binaries {
			if b.Name == n {
				out, found = append(out, b), true
			}
		}
		if !found {
			return nil, fmt.Errorf("unknown image %q (have %s)", n, strings.Join(names(binaries), ", "))
		}
	}
	return out, nil
}
