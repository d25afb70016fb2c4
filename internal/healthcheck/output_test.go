package healthcheck

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

// fixedChecks is a run with one passing, one warning and one failing check
// in two categories.
func fixedChecks(fail bool) []*Category {
	failing := func(context.Context) error {
		if fail {
			return errors.New("it broke")
		}
		return nil
	}
	return []*Category{
		{Name: "cat-a", Checks: []Checker{
			{Description: "passes", Anchor: "a", Check: func(context.Context) error { return nil }},
			{Description: "warns", Anchor: "w", Warning: true, Check: func(context.Context) error { return errors.New("watch out") }},
			{Description: "skipped", Anchor: "s", Check: func(context.Context) error { return errSkip }},
		}},
		{Name: "cat-b", Checks: []Checker{{Description: "may fail", Anchor: "f", Check: failing}}},
	}
}

func render(t *testing.T, cats []*Category, output string) (string, bool) {
	t.Helper()
	var b bytes.Buffer
	p := newPrinter(&b, output)
	r := &Runner{}
	ok, warn := r.Run(context.Background(), cats, p.observe)
	if err := p.finish(ok, warn); err != nil {
		t.Fatal(err)
	}
	return b.String(), ok
}

func TestTableOutput(t *testing.T) {
	got, ok := render(t, fixedChecks(true), OutputTable)
	want := `cat-a
-----
√ passes
‼ warns
    watch out
    see ` + HintBaseURL + `w for hints

cat-b
-----
× may fail
    it broke
    see ` + HintBaseURL + `f for hints

Status check results are ×
`
	if ok || got != want {
		t.Errorf("ok=%v, table:\n%s\nwant:\n%s", ok, got, want)
	}
	got, ok = render(t, fixedChecks(false), OutputTable)
	if !ok || !strings.HasSuffix(got, "√ may fail\n\nStatus check results are √\n") {
		t.Errorf("passing table:\n%s", got)
	}
}

func TestShortOutput(t *testing.T) {
	got, _ := render(t, fixedChecks(false), OutputShort)
	want := "cat-a\n-----\n‼ warns\n    watch out\n    see " + HintBaseURL + "w for hints\n\nStatus check results are √\n"
	if got != want {
		t.Errorf("short:\n%s\nwant:\n%s", got, want)
	}
	allGood := []*Category{{Name: "c", Checks: []Checker{{Description: "ok", Check: func(context.Context) error { return nil }}}}}
	if got, _ := render(t, allGood, OutputShort); got != "Status check results are √\n" {
		t.Errorf("short with every check passing: %q", got)
	}
}

func TestJSONOutput(t *testing.T) {
	got, _ := render(t, fixedChecks(true), OutputJSON)
	want := JSONOutput{Success: false, Categories: []*JSONCategory{
		{Name: "cat-a", Checks: []*JSONCheck{
			{Description: "passes", Result: ResultSuccess},
			{Description: "warns", Result: ResultWarning, Error: "watch out", Hint: HintBaseURL + "w"},
		}},
		{Name: "cat-b", Checks: []*JSONCheck{{Description: "may fail", Result: ResultError, Error: "it broke", Hint: HintBaseURL + "f"}}},
	}}
	wantJS, _ := json.MarshalIndent(want, "", "  ")
	if got != string(wantJS)+"\n" {
		t.Errorf("json:\n%s\nwant:\n%s", got, wantJS)
	}
	assertJSONShape(t, []byte(got))
}

// TestRetryUntilDeadline: a failing retried check runs again until it
// passes; past the deadline its last error is final.
func TestRetryUntilDeadline(t *testing.T) {
	now := time.Unix(1000, 0)
	tries := 0
	r := &Runner{Deadline: now.Add(time.Minute), Now: func() time.Time { return now },
		Sleep: func(context.Context, time.Duration) { now = now.Add(20 * time.Second) }}
	check := func(passAt int) []*Category {
		tries = 0
		return []*Category{{Name: "c", Checks: []Checker{{Description: "flaky", Retry: true, Check: func(context.Context) error {
			tries++
			if tries >= passAt {
				return nil
			}
			return errors.New("not yet")
		}}}}}
	}
	var seen []string
	obs := func(r *Result) {
		seen = append(seen, func() string {
			if r.Retry {
				return "retry:" + r.Err.Error()
			}
			if r.Err != nil {
				return "fail"
			}
			return "ok"
		}())
	}
	if ok, _ := r.Run(context.Background(), check(3), obs); !ok || tries != 3 || strings.Join(seen, ",") != "retry:waiting for check to complete,retry:waiting for check to complete,ok" {
		t.Errorf("passing on the 3rd try: ok=%v tries=%d seen=%v", ok, tries, seen)
	}
	seen, now = nil, time.Unix(1000, 0)
	if ok, _ := r.Run(context.Background(), check(100), obs); ok || tries != 4 || seen[len(seen)-1] != "fail" {
		t.Errorf("never passing: ok=%v tries=%d (want 4: t=0,20,40 retried, 60 final) seen=%v", ok, tries, seen)
	}
}

func TestFatalStops(t *testing.T) {
	ran := false
	cats := []*Category{{Name: "c", Checks: []Checker{
		{Description: "fatal", Fatal: true, Check: func(context.Context) error { return errors.New("no") }},
	}}, {Name: "d", Expand: func() []Checker {
		ran = true
		return nil
	}}}
	if ok, _ := (&Runner{}).Run(context.Background(), cats, func(*Result) {}); ok || ran {
		t.Errorf("ok=%v, later category expanded=%v", ok, ran)
	}
}

// jsonKeys is the exact key set of `check -o json` (EXTENSIONS.md).
var jsonKeys = map[string][]string{
	"top":      {"categories", "success"},
	"category": {"categoryName", "checks"},
	// hint and error only on failures
	"check": {"description", "error", "hint", "result"},
}

// assertJSONShape decodes out strictly into Linkerd's shape and checks
// that no other key appears.
func assertJSONShape(t *testing.T, out []byte) JSONOutput {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(out))
	dec.DisallowUnknownFields()
	var doc JSONOutput
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("output is not Linkerd's JSON shape: %v\n%s", err, out)
	}
	var raw map[string]any
	if err := json.Unmarshal(out, &raw); err != nil {
		t.Fatal(err)
	}
	keysIn := func(what string, m map[string]any) {
		for k := range m {
			ok := false
			for _, w := range jsonKeys[what] {
				ok = ok || k == w
			}
			if !ok {
				t.Errorf("%s has key %q, not in %v", what, k, jsonKeys[what])
			}
		}
	}
	keysIn("top", raw)
	if _, ok := raw["success"].(bool); !ok {
		t.Errorf("success is not a boolean")
	}
	cats, ok := raw["categories"].([]any)
	if !ok {
		t.Fatalf("categories is not an array: %s", out)
	}
	for _, c := range cats {
		cm := c.(map[string]any)
		keysIn("category", cm)
		for _, ch := range cm["checks"].([]any) {
			chm := ch.(map[string]any)
			keysIn("check", chm)
			switch chm["result"] {
			case ResultSuccess:
				if _, has := chm["error"]; has {
					t.Errorf("a passing check has an error: %v", chm)
				}
			case ResultWarning, ResultError:
				if h, _ := chm["hint"].(string); !strings.HasPrefix(h, HintBaseURL) {
					t.Errorf("failing check without a hint URL: %v", chm)
				}
			default:
				t.Errorf("result %v is not success, warning or error", chm["result"])
			}
		}
	}
	return doc
}
