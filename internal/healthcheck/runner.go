package healthcheck

import (
	"context"
	"errors"
	"time"
)

// HintBaseURL is where every hint points: the troubleshooting page, one
// section per check (the anchor is appended).
const HintBaseURL = "https://github.com/l5d-tunnel/l5d-tunnel/blob/main/docs/troubleshooting.md#"

// Result is what one run of a check produced; the outputs render it.
type Result struct {
	Category    string
	Description string
	HintURL     string
	// Retry is set on a failed attempt that will be run again (the
	// deadline of --wait has not passed); outputs show the final attempt.
	Retry   bool
	Warning bool
	Err     error
}

// errWaiting replaces the error of a retried attempt whose check does not
// surface its error while waiting (as Linkerd's checks do).
var errWaiting = errors.New("waiting for check to complete")

// errSkip is returned by a check that does not apply (for example the other
// checks of a Link without a usable binding): it is not reported at all.
var errSkip = errors.New("check skipped")

// Checker is one check.
type Checker struct {
	Description string
	// Anchor is the section of docs/troubleshooting.md the hint points at.
	Anchor string
	// Fatal stops all remaining checks when this one fails.
	Fatal bool
	// Warning failures are reported (‼) but do not fail the run.
	Warning bool
	// Retry runs the check again until the --wait deadline while it fails.
	Retry bool
	// Surface shows the check's own error while it is retried instead of
	// "waiting for check to complete".
	Surface bool
	Check   func(ctx context.Context) error
}

// Category is a named group of checks. Checks may be produced lazily by
// Expand, which runs when the category is reached (so it can see what
// earlier checks found).
type Category struct {
	Name   string
	Checks []Checker
	// Expand, when set, returns the checks appended after Checks when the
	// category is reached.
	Expand func() []Checker
}

// Runner runs categories in order.
type Runner struct {
	// Deadline ends the retries of failing checks (now + --wait).
	Deadline time.Time
	// Interval is the wait between two attempts (5s, as in Linkerd).
	Interval time.Duration
	// Timeout bounds one attempt (30s, as in Linkerd).
	Timeout time.Duration
	// Now and Sleep are time.Now and a context-aware sleep; tests replace them.
	Now   func() time.Time
	Sleep func(ctx context.Context, d time.Duration)
}

// Defaults of Runner.
const (
	DefaultInterval = 5 * time.Second
	DefaultTimeout  = 30 * time.Second
)

// Run runs every check of cats, passing each result to observe, and reports
// whether no check failed (warnings aside) and whether one warned. A failed
// fatal check ends the run.
func (r *Runner) Run(ctx context.Context, cats []*Category, observe func(*Result)) (success, warning bool) {
	st := &runState{success: true}
	for _, cat := range cats {
		if !r.runAll(ctx, cat.Name, cat.Checks, observe, st) {
			break
		}
		// the lazily built checks run after the fixed ones
		if cat.Expand != nil && !r.runAll(ctx, cat.Name, cat.Expand(), observe, st) {
			break
		}
	}
	return st.success, st.warning
}

type runState struct{ success, warning bool }

// runAll runs checks in order; false means a fatal check failed.
func (r *Runner) runAll(ctx context.Context, cat string, checks []Checker, observe func(*Result), st *runState) bool {
	for i := range checks {
		c := &checks[i]
		ok, ran := r.runOne(ctx, cat, c, observe)
		if !ran || ok {
			continue
		}
		if c.Warning {
			st.warning = true
		} else {
			st.success = false
		}
		if c.Fatal {
			return false
		}
	}
	return true
}

// runOne runs c until it passes, the deadline passes or it is not retried;
// ran is false when the check skipped itself.
func (r *Runner) runOne(ctx context.Context, cat string, c *Checker, observe func(*Result)) (ok, ran bool) {
	for {
		actx, cancel := context.WithTimeout(ctx, r.timeout())
		err := c.Check(actx)
		cancel()
		if errors.Is(err, errSkip) {
			return true, false
		}
		res := &Result{Category: cat, Description: c.Description, HintURL: HintBaseURL + c.Anchor, Warning: c.Warning, Err: err}
		if err != nil && c.Retry && ctx.Err() == nil && r.now().Before(r.Deadline) {
			res.Retry = true
			if !c.Surface {
				res.Err = errWaiting
			}
			observe(res)
			r.sleep(ctx, r.interval())
			continue
		}
		observe(res)
		return err == nil, true
	}
}

func (r *Runner) timeout() time.Duration {
	if r.Timeout > 0 {
		return r.Timeout
	}
	return DefaultTimeout
}

func (r *Runner) interval() time.Duration {
	if r.Interval > 0 {
		return r.Interval
	}
	return DefaultInterval
}

func (r *Runner) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

func (r *Runner) sleep(ctx context.Context, d time.Duration) {
	if r.Sleep != nil {
		r.Sleep(ctx, d)
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
