package healthcheck

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/l5d-tunnel/l5d-tunnel/internal/repo"
)

// TestEveryHintHasASection: every check's hint anchor is a section of
// docs/troubleshooting.md (its "## anchor" heading).
func TestEveryHintHasASection(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join(repo.Root(), "docs", "troubleshooting.md"))
	if err != nil {
		t.Fatal(err)
	}
	headings := map[string]bool{}
	for _, l := range strings.Split(string(doc), "\n") {
		if h, ok := strings.CutPrefix(l, "## "); ok {
			headings[h] = true
		}
	}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`Anchor: "([^"]+)"`)
	n := 0
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range re.FindAllStringSubmatch(string(src), -1) {
			n++
			if !headings[m[1]] {
				t.Errorf("%s: hint anchor %q has no section \"## %s\" in docs/troubleshooting.md", f, m[1], m[1])
			}
		}
	}
	if n < 15 {
		t.Errorf("found %d anchors in the sources; the pattern no longer matches the checks", n)
	}
}
