package main

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The images are built once per test binary into a temporary folder (twice
// for TestReproducible); the Go build cache makes the second build cheap.
var (
	buildDir  string
	buildOnce sync.Once
	built     *result
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := gitOutput(context.Background(), ".", "rev-parse", "--show-toplevel")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

func testOptions(t *testing.T, out string) options {
	root := repoRoot(t)
	platforms, err := parsePlatforms("linux/amd64,linux/arm64")
	if err != nil {
		t.Fatal(err)
	}
	return options{
		Root:      root,
		Out:       out,
		Manifests: filepath.Join(root, "dist"),
		CACerts:   "/etc/ssl/certs/ca-certificates.crt",
		Platforms: platforms,
		Binaries:  binaries,
		Log:       testLogWriter{t},
	}
}

type testLogWriter struct{ t *testing.T }

func (w testLogWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// images returns the images of this test binary's first build.
func images(t *testing.T) *result {
	t.Helper()
	buildOnce.Do(func() {
		var err error
		if buildDir, err = os.MkdirTemp("", "l5d-tunnel-images-test-"); err != nil {
			buildErr = err
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
		defer cancel()
		start := time.Now()
		built, buildErr = build(ctx, testOptions(t, filepath.Join(buildDir, "a")))
		t.Logf("images built in %v", time.Since(start).Round(time.Millisecond))
	})
	if buildErr != nil {
		t.Fatalf("build: %v", buildErr)
	}
	return built
}

// TestReproducible builds everything a second time: the same commit must give
// the same index digests and byte-identical docker tarballs.
func TestReproducible(t *testing.T) {
	first := images(t)
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	start := time.Now()
	second, err := build(ctx, testOptions(t, filepath.Join(buildDir, "b")))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("second build in %v", time.Since(start).Round(time.Millisecond))
	if len(first.Images) != len(second.Images) {
		t.Fatalf("%d images, then %d", len(first.Images), len(second.Images))
	}
	for i, a := range first.Images {
		b := second.Images[i]
		if a.Ref != b.Ref || a.Index != b.Index {
			t.Errorf("%s@%s, then %s@%s", a.Ref, a.Index, b.Ref, b.Index)
		} else {
			t.Logf("%s@%s both times", a.Ref, a.Index)
		}
		for p, fa := range a.Tarballs {
			if ha, hb := fileSHA256(t, fa), fileSHA256(t, b.Tarballs[p]); ha != hb {
				t.Errorf("%s: docker tarball sha256 %s, then %s", filepath.Base(fa), ha, hb)
			}
		}
	}
}

func fileSHA256(t *testing.T, file string) string {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// TestImageContents reads the OCI layouts back and checks the index, each
// platform's config and every file of every layer.
func TestImageContents(t *testing.T) {
	res := images(t)
	root := repoRoot(t)
	revision, err := gitOutput(context.Background(), root, "rev-parse", "HEAD")
	if err != nil {
		t.Fatal(err)
	}
	hostCA, err := os.ReadFile("/etc/ssl/certs/ca-certificates.crt")
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Images) != len(binaries) {
		t.Fatalf("%d images for %d binaries", len(res.Images), len(binaries))
	}
	for _, im := range res.Images {
		t.Run(im.Name, func(t *testing.T) {
			if im.Ref.RepositoryStr() != "l5d-tunnel/"+im.Name || im.Ref.TagStr() != res.Version {
				t.Errorf("reference %s", im.Ref)
			}
			lp, err := layout.FromPath(im.Layout)
			if err != nil {
				t.Fatal(err)
			}
			top, err := lp.ImageIndex()
			if err != nil {
				t.Fatal(err)
			}
			topM, err := top.IndexManifest()
			if err != nil {
				t.Fatal(err)
			}
			if len(topM.Manifests) != 1 || topM.Manifests[0].Digest != im.Index ||
				topM.Manifests[0].Annotations[labelRefName] != im.Ref.String() {
				t.Fatalf("layout index.json: %+v, want one entry %s named %s", topM.Manifests, im.Index, im.Ref)
			}
			idx, err := top.ImageIndex(im.Index)
			if err != nil {
				t.Fatal(err)
			}
			idxM, err := idx.IndexManifest()
			if err != nil {
				t.Fatal(err)
			}
			if idxM.MediaType != types.OCIImageIndex {
				t.Errorf("index media type %s", idxM.MediaType)
			}
			var platforms []string
			for _, d := range idxM.Manifests {
				if d.Platform == nil {
					t.Fatalf("index entry %s has no platform", d.Digest)
				}
				platforms = append(platforms, d.Platform.String())
				img, err := idx.Image(d.Digest)
				if err != nil {
					t.Fatal(err)
				}
				t.Run(d.Platform.Architecture, func(t *testing.T) {
					checkImage(t, im, res, img, *d.Platform, revision, hostCA)
				})
			}
			sort.Strings(platforms)
			if strings.Join(platforms, ",") != "linux/amd64,linux/arm64" {
				t.Errorf("index platforms %v, want linux/amd64 and linux/arm64", platforms)
			}
		})
	}
}

func checkImage(t *testing.T, im builtImage, res *result, img v1.Image, p v1.Platform, revision string, hostCA []byte) {
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if m.MediaType != types.OCIManifestSchema1 || m.Config.MediaType != types.OCIConfigJSON {
		t.Errorf("media types %s, config %s: want OCI", m.MediaType, m.Config.MediaType)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != p.OS || cf.Architecture != p.Architecture {
		t.Errorf("config says %s/%s, index says %s", cf.OS, cf.Architecture, p)
	}
	if !cf.Created.Time.Equal(res.Epoch) {
		t.Errorf("created %v, want SOURCE_DATE_EPOCH %v", cf.Created.Time, res.Epoch)
	}
	c := cf.Config
	if c.User != "65532:65532" {
		t.Errorf("user %q, want 65532:65532", c.User)
	}
	if len(c.Entrypoint) != 1 || c.Entrypoint[0] != "/"+im.Name || len(c.Cmd) != 0 {
		t.Errorf("entrypoint %q cmd %q, want [/%s] and none", c.Entrypoint, c.Cmd, im.Name)
	}
	want := map[string]string{
		labelSource:   "https://github.com/l5d-tunnel/l5d-tunnel",
		labelVersion:  res.Version,
		labelRevision: revision,
		labelTitle:    im.Name,
		labelCreated:  res.Epoch.Format(time.RFC3339),
	}
	for k, v := range want {
		if c.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, c.Labels[k], v)
		}
	}
	if c.Labels[labelDescription] == "" {
		t.Errorf("no %s label", labelDescription)
	}
	for _, h := range cf.History {
		if !h.Created.Time.Equal(res.Epoch) {
			t.Errorf("history %q created %v", h.CreatedBy, h.Created.Time)
		}
	}

	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	var names []string
	for _, l := range layers {
		if mt, _ := l.MediaType(); mt != types.OCILayer {
			t.Errorf("layer media type %s", mt)
		}
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			names = append(names, h.Name)
			if h.Uid != 0 || h.Gid != 0 || !h.ModTime.Equal(res.Epoch) {
				t.Errorf("%s: uid %d gid %d mtime %v, want root-owned at SOURCE_DATE_EPOCH", h.Name, h.Uid, h.Gid, h.ModTime)
			}
			if h.Typeflag == tar.TypeReg {
				data, err := io.ReadAll(tr)
				if err != nil {
					t.Fatal(err)
				}
				files[h.Name] = data
				wantMode := int64(0o644)
				if h.Name == im.Name {
					wantMode = 0o755
				}
				if h.Mode != wantMode {
					t.Errorf("%s: mode %o, want %o", h.Name, h.Mode, wantMode)
				}
			} else if h.Typeflag != tar.TypeDir {
				t.Errorf("%s: type %q, want only files and directories", h.Name, h.Typeflag)
			}
		}
		rc.Close()
	}
	// Exactly these entries: no shell, no package manager, nothing else.
	wantNames := []string{"etc/", "etc/group", "etc/passwd", "etc/ssl/", "etc/ssl/certs/", "etc/ssl/certs/ca-certificates.crt", im.Name}
	got := append([]string(nil), names...)
	sort.Strings(got)
	if strings.Join(got, " ") != strings.Join(wantNames, " ") {
		t.Errorf("layer entries %q, want %q", got, wantNames)
	}
	if !bytes.Equal(files[caBundlePath], hostCA) {
		t.Errorf("CA bundle in the image (%d bytes) is not the host's (%d bytes)", len(files[caBundlePath]), len(hostCA))
	}
	if !strings.Contains(string(files["etc/passwd"]), "\nnonroot:x:65532:65532:") ||
		!strings.Contains(string(files["etc/group"]), "\nnonroot:x:65532:") {
		t.Errorf("no nonroot 65532 in /etc/passwd or /etc/group:\n%s%s", files["etc/passwd"], files["etc/group"])
	}
	bin, err := elf.NewFile(bytes.NewReader(files[im.Name]))
	if err != nil {
		t.Fatalf("/%s: %v", im.Name, err)
	}
	machine := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}[p.Architecture]
	if bin.Machine != machine {
		t.Errorf("/%s is built for %v, the manifest says %s", im.Name, bin.Machine, p.Architecture)
	}
	for _, prog := range bin.Progs {
		if prog.Type == elf.PT_INTERP {
			t.Errorf("/%s is dynamically linked (PT_INTERP): want a static binary", im.Name)
		}
	}
	if runtime.GOARCH == p.Architecture && im.Tarballs[p.String()] == "" {
		t.Errorf("no docker tarball for the host platform %s", p)
	}
}
