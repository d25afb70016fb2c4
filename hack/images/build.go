package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The user every image runs as (distroless's "nonroot"), matching the
// Deployments' runAsUser, runAsGroup and fsGroup.
const (
	nonrootID    = 65532
	caBundlePath = "etc/ssl/certs/ca-certificates.crt"
)

// OCI annotation and label keys (image-spec annotations.md).
const (
	labelCreated     = "org.opencontainers.image.created"
	labelSource      = "org.opencontainers.image.source"
	labelVersion     = "org.opencontainers.image.version"
	labelRevision    = "org.opencontainers.image.revision"
	labelTitle       = "org.opencontainers.image.title"
	labelDescription = "org.opencontainers.image.description"
	labelRefName     = "org.opencontainers.image.ref.name"
	// containerd (ctr import, kind load image-archive) names an image from an
	// OCI archive by this annotation.
	containerdImageName = "io.containerd.image.name"
)

type options struct {
	Root      string // repository root
	Out       string // output folder
	Manifests string // rendered manifests naming the images
	CACerts   string // CA bundle copied into the images
	Platforms []v1.Platform
	Binaries  []binary
	Log       io.Writer
}

// result is what one build produced.
type result struct {
	Out     string
	Images  []builtImage
	Epoch   time.Time
	Version string
}

type builtImage struct {
	Name      string
	Ref       name.Tag
	Layout    string             // OCI layout folder
	Index     v1.Hash            // digest of the multi-platform index
	Manifests map[string]v1.Hash // platform (os/arch) -> image manifest digest
	Configs   map[string]v1.Hash // platform -> config digest (the engine's image ID)
	Tarballs  map[string]string  // platform -> docker load tarball
}

func (r result) Summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# l5d-tunnel images, version %s, SOURCE_DATE_EPOCH %d, in %s\n", r.Version, r.Epoch.Unix(), r.Out)
	for _, im := range r.Images {
		fmt.Fprintf(&b, "%s@%s\t%s\n", im.Ref, im.Index, filepath.Base(im.Layout))
		for _, p := range sortedKeys(im.Manifests) {
			fmt.Fprintf(&b, "  %s\t%s\t%s\n", p, im.Manifests[p], filepath.Base(im.Tarballs[p]))
		}
	}
	return b.String()
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func parsePlatforms(s string) ([]v1.Platform, error) {
	var out []v1.Platform
	seen := map[string]bool{}
	for _, p := range strings.Split(s, ",") {
		osName, arch, ok := strings.Cut(strings.TrimSpace(p), "/")
		if !ok || osName != "linux" || arch == "" || strings.Contains(arch, "/") {
			return nil, fmt.Errorf("%q: want linux/ARCH", p)
		}
		if seen[arch] {
			return nil, fmt.Errorf("%q given twice", p)
		}
		seen[arch] = true
		out = append(out, v1.Platform{OS: osName, Architecture: arch})
	}
	return out, nil
}

// build compiles every binary for every platform and writes the images.
func build(ctx context.Context, o options) (*result, error) {
	meta, err := readMeta(ctx, o.Root)
	if err != nil {
		return nil, err
	}
	prefix, tag, err := refsFromManifests(o.Manifests, names(binaries))
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(o.Log, "images: %s/{%s}:%s, revision %s, SOURCE_DATE_EPOCH %d\n",
		prefix, strings.Join(names(o.Binaries), ","), tag, meta.Revision, meta.Epoch.Unix())
	ca, err := os.ReadFile(o.CACerts)
	if err != nil {
		return nil, fmt.Errorf("CA bundle (install Debian's ca-certificates or pass --ca-certs): %w", err)
	}
	base, err := baseLayer(ca, meta.Epoch)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp("", "l5d-tunnel-images-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)

	res := &result{Out: o.Out, Epoch: meta.Epoch, Version: tag}
	for _, b := range o.Binaries {
		ref, err := name.NewTag(prefix + "/" + b.Name + ":" + tag)
		if err != nil {
			return nil, fmt.Errorf("image reference for %s: %w", b.Name, err)
		}
		labels := map[string]string{
			labelCreated:     meta.Epoch.UTC().Format(time.RFC3339),
			labelSource:      meta.Source,
			labelVersion:     tag,
			labelRevision:    meta.Revision,
			labelTitle:       b.Name,
			labelDescription: b.Description,
		}
		idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
		idx = mutate.Annotations(idx, labels).(v1.ImageIndex)
		built := builtImage{Name: b.Name, Ref: ref, Manifests: map[string]v1.Hash{}, Configs: map[string]v1.Hash{}, Tarballs: map[string]string{}}
		imgs := map[string]v1.Image{}
		for _, p := range o.Platforms {
			bin := filepath.Join(work, p.Architecture, b.Name)
			if err := goBuild(ctx, o, b, p, tag, bin); err != nil {
				return nil, err
			}
			img, err := image(b, p, bin, base, labels, meta.Epoch)
			if err != nil {
				return nil, fmt.Errorf("%s %s: %w", b.Name, p, err)
			}
			digest, err := img.Digest()
			if err != nil {
				return nil, err
			}
			built.Manifests[p.String()] = digest
			if built.Configs[p.String()], err = img.ConfigName(); err != nil {
				return nil, err
			}
			imgs[p.String()] = img
			pl := p
			idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
				Add:        img,
				Descriptor: v1.Descriptor{Platform: &pl},
			})
		}
		if built.Index, err = idx.Digest(); err != nil {
			return nil, err
		}
		built.Layout = filepath.Join(o.Out, b.Name+".oci")
		if err := writeLayout(built.Layout, idx, ref); err != nil {
			return nil, fmt.Errorf("%s: OCI layout: %w", b.Name, err)
		}
		for _, p := range o.Platforms {
			file := filepath.Join(o.Out, fmt.Sprintf("%s_%s_%s.tar", b.Name, p.OS, p.Architecture))
			if err := writeTarball(file, ref, imgs[p.String()]); err != nil {
				return nil, fmt.Errorf("%s %s: docker tarball: %w", b.Name, p, err)
			}
			built.Tarballs[p.String()] = file
		}
		res.Images = append(res.Images, built)
	}
	if err := os.WriteFile(filepath.Join(o.Out, "images.txt"), []byte(res.Summary()), 0o644); err != nil {
		return nil, err
	}
	return res, nil
}

// meta is what the labels say about the source.
type meta struct {
	Source   string // repository URL, from the root module path
	Revision string // commit
	Epoch    time.Time
}

func readMeta(ctx context.Context, root string) (meta, error) {
	var m meta
	mod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		return m, fmt.Errorf("--root %s: %w", root, err)
	}
	modPath := regexp.MustCompile(`(?m)^module\s+(\S+)`).FindSubmatch(mod)
	if modPath == nil {
		return m, fmt.Errorf("%s/go.mod: no module line", root)
	}
	m.Source = "https://" + string(modPath[1])
	if m.Revision, err = gitOutput(ctx, root, "rev-parse", "HEAD"); err != nil {
		return m, err
	}
	epoch := os.Getenv("SOURCE_DATE_EPOCH")
	if epoch == "" {
		if epoch, err = gitOutput(ctx, root, "log", "-1", "--format=%ct"); err != nil {
			return m, err
		}
	}
	sec, err := strconv.ParseInt(epoch, 10, 64)
	if err != nil || sec < 0 {
		return m, fmt.Errorf("SOURCE_DATE_EPOCH %q: want seconds since 1970", epoch)
	}
	m.Epoch = time.Unix(sec, 0).UTC()
	return m, nil
}

func gitOutput(ctx context.Context, dir string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(string(out)), nil
}

// imageLine matches an `image:` field of a rendered manifest.
var imageLine = regexp.MustCompile(`(?m)^\s*(?:-\s+)?image:\s*["']?([^\s"'#]+)`)

// refsFromManifests reads every image reference in dir/*.yaml and returns
// their common repository prefix (registry/owner) and tag. Every reference
// must name one of known, and all must agree on prefix and tag: the images
// are one release.
func refsFromManifests(dir string, known []string) (prefix, tag string, err error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return "", "", err
	}
	if len(files) == 0 {
		return "", "", fmt.Errorf("--manifests %s: no *.yaml files (run 'make manifests')", dir)
	}
	sort.Strings(files)
	var first string
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return "", "", err
		}
		for _, m := range imageLine.FindAllSubmatch(data, -1) {
			ref := string(m[1])
			t, err := name.NewTag(ref, name.StrictValidation)
			if err != nil {
				return "", "", fmt.Errorf("%s: image %q: want REGISTRY/OWNER/NAME:TAG: %w", f, ref, err)
			}
			repo := t.Context().Name()
			p, base := path.Split(repo)
			p = strings.TrimSuffix(p, "/")
			if !contains(known, base) {
				return "", "", fmt.Errorf("%s: image %q names no binary this tool builds (%s)", f, ref, strings.Join(known, ", "))
			}
			if first == "" {
				first, prefix, tag = f+": "+ref, p, t.TagStr()
			} else if p != prefix || t.TagStr() != tag {
				return "", "", fmt.Errorf("%s: image %q disagrees with %s: every image must share registry, owner and tag", f, ref, first)
			}
		}
	}
	if first == "" {
		return "", "", fmt.Errorf("--manifests %s: no image references", dir)
	}
	return prefix, tag, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func goBuild(ctx context.Context, o options, b binary, p v1.Platform, version, out string) error {
	ldflags := "-s -w"
	if b.VersionVar != "" {
		ldflags += " -X " + b.VersionVar + "=" + version
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", ldflags, "-o", out, b.Package)
	cmd.Dir = o.Root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+p.OS, "GOARCH="+p.Architecture, "GOFLAGS=-mod=readonly")
	cmd.Stdout, cmd.Stderr = o.Log, o.Log
	fmt.Fprintf(o.Log, "images: go build %s for %s\n", b.Package, p)
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build %s for %s: %w", b.Package, p, err)
	}
	return nil
}

// file is one entry of a layer.
type file struct {
	Path string // without leading slash
	Mode int64
	Data []byte // nil for a directory
}

// layer returns an OCI layer of files: parent directories added, entries
// sorted, owned by root, every timestamp epoch.
func layer(files []file, epoch time.Time) (v1.Layer, error) {
	all := map[string]file{}
	for _, f := range files {
		all[f.Path] = f
		for d := path.Dir(f.Path); d != "."; d = path.Dir(d) {
			if _, ok := all[d]; !ok {
				all[d] = file{Path: d, Mode: 0o755}
			}
		}
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, p := range sortedKeys(all) {
		f := all[p]
		h := &tar.Header{
			Name:    f.Path,
			Mode:    f.Mode,
			ModTime: epoch,
			Format:  tar.FormatPAX,
		}
		if f.Data == nil {
			h.Typeflag, h.Name = tar.TypeDir, f.Path+"/"
		} else {
			h.Typeflag, h.Size = tar.TypeReg, int64(len(f.Data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.Data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}, tarball.WithMediaType(types.OCILayer), tarball.WithCompressedCaching)
}

// baseLayer holds what every image shares: the CA bundle and the user.
func baseLayer(ca []byte, epoch time.Time) (v1.Layer, error) {
	id := strconv.Itoa(nonrootID)
	passwd := "root:x:0:0:root:/root:/sbin/nologin\n" +
		"nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n" +
		"nonroot:x:" + id + ":" + id + ":nonroot:/home/nonroot:/sbin/nologin\n"
	group := "root:x:0:\nnobody:x:65534:\nnonroot:x:" + id + ":\n"
	return layer([]file{
		{Path: "etc/passwd", Mode: 0o644, Data: []byte(passwd)},
		{Path: "etc/group", Mode: 0o644, Data: []byte(group)},
		{Path: caBundlePath, Mode: 0o644, Data: ca},
	}, epoch)
}

// image lays the binary on the base layer and sets the config.
func image(b binary, p v1.Platform, bin string, base v1.Layer, labels map[string]string, epoch time.Time) (v1.Image, error) {
	data, err := os.ReadFile(bin)
	if err != nil {
		return nil, err
	}
	binLayer, err := layer([]file{{Path: b.Name, Mode: 0o755, Data: data}}, epoch)
	if err != nil {
		return nil, err
	}
	created := v1.Time{Time: epoch}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img,
		mutate.Addendum{Layer: base, MediaType: types.OCILayer, History: v1.History{
			Created: created, CreatedBy: "l5d-tunnel hack/images: CA certificates, /etc/passwd, /etc/group (nonroot 65532)",
		}},
		mutate.Addendum{Layer: binLayer, MediaType: types.OCILayer, History: v1.History{
			Created: created, CreatedBy: "l5d-tunnel hack/images: go build -trimpath " + b.Package + " (CGO_ENABLED=0)",
		}},
	)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = p.OS, p.Architecture, p.Variant
	cf.Created = created
	cf.Author = ""
	cf.Config = v1.Config{
		User:       fmt.Sprintf("%d:%d", nonrootID, nonrootID),
		Entrypoint: []string{"/" + b.Name},
		WorkingDir: "/",
		Labels:     labels,
	}
	return mutate.ConfigFile(img, cf)
}

func writeLayout(dir string, idx v1.ImageIndex, ref name.Tag) error {
	// A fresh layout each time: appending to an old one would keep stale
	// manifests in index.json.
	tmp := dir + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	p, err := layout.Write(tmp, empty.Index)
	if err != nil {
		return err
	}
	if err := p.AppendIndex(idx, layout.WithAnnotations(map[string]string{
		labelRefName:        ref.String(),
		containerdImageName: ref.String(),
	})); err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	return os.Rename(tmp, dir)
}

func writeTarball(file string, ref name.Tag, img v1.Image) error {
	tmp := file + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	err = tarball.Write(ref, img, w)
	if err == nil {
		err = w.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, file)
}
