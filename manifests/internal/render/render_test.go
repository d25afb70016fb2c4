package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/l5d-tunnel/l5d-tunnel/internal/testenv"
)

// TestDistUpToDate renders dist/ as `make manifests` does and compares byte
// for byte with the checked-in files.
func TestDistUpToDate(t *testing.T) {
	files, err := Files()
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 3 {
		t.Fatalf("%d dist files, want 3", len(files))
	}
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "dist", name))
		if err != nil {
			t.Fatalf("dist/%s: %v (run `make manifests`)", name, err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("dist/%s is not what manifests/charts/%s renders to: run `make manifests` and commit", name, Dist[name])
		}
	}
	entries, err := os.ReadDir(filepath.Join(testenv.RepoRoot(), "dist"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if _, ok := files[e.Name()]; !ok {
			t.Errorf("dist/%s is not rendered by `make manifests`: delete it", e.Name())
		}
	}
}

// TestWrite writes into a fresh folder, twice: the same bytes, mode 0644,
// no temporary files left.
func TestWrite(t *testing.T) {
	dir := t.TempDir()
	for range 2 {
		if err := write(dir); err != nil {
			t.Fatal(err)
		}
	}
	files, _ := Files()
	entries, _ := os.ReadDir(dir)
	if len(entries) != len(files) {
		t.Errorf("%d entries in %s, want %d", len(entries), dir, len(files))
	}
	for name, want := range files {
		p := filepath.Join(dir, name)
		got, err := os.ReadFile(p)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: %v, equal=%v", name, err, bytes.Equal(got, want))
		}
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o644 {
			t.Errorf("%s: mode %v, %v", name, fi.Mode(), err)
		}
	}
}
