package healthcheck

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// Output formats of --output (Linkerd's names).
const (
	OutputTable = "table"
	OutputJSON  = "json"
	OutputShort = "short"
)

// The status marks of Linkerd's table output.
const (
	markOK   = "√" // U+221A
	markWarn = "‼" // U+203C
	markFail = "×" // U+00D7
)

// Result values of the JSON output.
const (
	ResultSuccess = "success"
	ResultWarning = "warning"
	ResultError   = "error"
)

// JSONOutput is the document `check -o json` prints, the shape `linkerd
// check` parses from every extension (EXTENSIONS.md).
type JSONOutput struct {
	Success    bool            `json:"success"`
	Categories []*JSONCategory `json:"categories"`
}

// JSONCategory is one category of JSONOutput.
type JSONCategory struct {
	Name   string       `json:"categoryName"`
	Checks []*JSONCheck `json:"checks"`
}

// JSONCheck is one check of a JSONCategory. Hint and Error are set only
// when the check failed or warned.
type JSONCheck struct {
	Description string `json:"description"`
	Hint        string `json:"hint,omitempty"`
	Error       string `json:"error,omitempty"`
	Result      string `json:"result"`
}

// printer renders results as they come.
type printer interface {
	observe(r *Result)
	// finish writes what follows the last result, ending with the status line.
	finish(success, warning bool) error
}

func newPrinter(w io.Writer, output string) printer {
	if output == OutputJSON {
		return &jsonPrinter{w: w}
	}
	return &tablePrinter{w: w, short: output == OutputShort}
}

// tablePrinter writes Linkerd's table (and, with short, only what did not
// pass):
//
//	linkerd-tunnel
//	--------------
//	√ tunnel extension Namespace exists
//	× webhook answers admission requests
//	    <error>
//	    see <hint URL> for hints
//
//	Status check results are ×
type tablePrinter struct {
	w        io.Writer
	short    bool
	category string
	err      error
}

func (p *tablePrinter) printf(format string, a ...any) {
	if p.err == nil {
		_, p.err = fmt.Fprintf(p.w, format, a...)
	}
}

func (p *tablePrinter) observe(r *Result) {
	if r.Retry || (p.short && r.Err == nil) {
		return
	}
	if r.Category != p.category {
		if p.category != "" {
			p.printf("\n")
		}
		p.printf("%s\n%s\n", r.Category, strings.Repeat("-", len(r.Category)))
		p.category = r.Category
	}
	mark := markOK
	switch {
	case r.Err != nil && r.Warning:
		mark = markWarn
	case r.Err != nil:
		mark = markFail
	}
	p.printf("%s %s\n", mark, r.Description)
	if r.Err == nil {
		return
	}
	p.printf("    %s\n", r.Err)
	if r.HintURL != "" {
		p.printf("    see %s for hints\n", r.HintURL)
	}
}

func (p *tablePrinter) finish(success, warning bool) error {
	// as Linkerd: a blank line before the status line, except in short
	// output when nothing was printed
	if !p.short || !success || warning {
		p.printf("\n")
	}
	mark := markOK
	if !success {
		mark = markFail
	}
	p.printf("Status check results are %s\n", mark)
	return p.err
}

// jsonPrinter collects the final results and prints JSONOutput at the end.
type jsonPrinter struct {
	w   io.Writer
	out JSONOutput
}

func (p *jsonPrinter) observe(r *Result) {
	n := len(p.out.Categories)
	if n == 0 || p.out.Categories[n-1].Name != r.Category {
		p.out.Categories = append(p.out.Categories, &JSONCategory{Name: r.Category, Checks: []*JSONCheck{}})
		n++
	}
	if r.Retry {
		return
	}
	c := &JSONCheck{Description: r.Description, Result: ResultSuccess}
	if r.Err != nil {
		c.Result = ResultError
		if r.Warning {
			c.Result = ResultWarning
		}
		c.Error = r.Err.Error()
		c.Hint = r.HintURL
	}
	cat := p.out.Categories[n-1]
	cat.Checks = append(cat.Checks, c)
}

func (p *jsonPrinter) finish(success, _ bool) error {
	p.out.Success = success
	if p.out.Categories == nil {
		p.out.Categories = []*JSONCategory{}
	}
	js, err := json.MarshalIndent(&p.out, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(p.w, "%s\n", js)
	return err
}
