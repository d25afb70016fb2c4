package webhook

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/l5d-tunnel/l5d-tunnel/internal/fixtures"
	"github.com/l5d-tunnel/l5d-tunnel/internal/repo"
	"github.com/l5d-tunnel/l5d-tunnel/internal/testenv"
	"github.com/l5d-tunnel/l5d-tunnel/pkg/mutate"
)

// benchObjects returns one object of each kind from the newest fixture, as
// a request and as the already-rewritten object (the idempotent path every
// later UPDATE takes).
func benchRequests(b *testing.B, h *Handler) map[string]admission.Request {
	b.Helper()
	out := map[string]admission.Request{}
	for _, o := range linkObjects(b, fixtures.Newest(), "link.yaml") {
		kind, _ := mutate.Classify(o)
		if kind == mutate.KindNone || (kind == mutate.KindCredentials && o.GetNamespace() != "linkerd-multicluster") {
			continue
		}
		req := request(b, admissionv1.Create, o)
		out[string(kind)] = req
		rewritten := apply(b, req.Object.Raw, h.Handle(context.Background(), req))
		out[string(kind)+"-rewritten"] = rawRequest(admissionv1.Update, o.GetNamespace(), o.GetName(), o.GetKind(), rewritten)
	}
	for _, o := range linkObjects(b, fixtures.Newest(), "mirrored.yaml") {
		if o.GetKind() == "Service" && o.GetName() == "web-home" {
			out["mirror-service"] = request(b, admissionv1.Create, o)
		}
	}
	if len(out) != 7 {
		b.Fatalf("benchmark requests: %d, want 7", len(out))
	}
	return out
}

// BenchmarkHandler measures the admission handler alone (decode, classify,
// namespace and binding lookup, Mutate, JSON patch) per object kind.
func BenchmarkHandler(b *testing.B) {
	h := newHandler(fakeBindings{b: map[string]*mutate.Binding{"home": testBinding("home")}}, fakeNamespaces{})
	reqs := benchRequests(b, h)
	names := make([]string, 0, len(reqs))
	for n := range reqs {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, name := range names {
		req := reqs[name]
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			ctx := context.Background()
			start := time.Now()
			for b.Loop() {
				if resp := h.Handle(ctx, req); !resp.Allowed || len(resp.Warnings) > 0 {
					b.Fatalf("%s: %+v", name, resp)
				}
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
		})
	}
}

// Load run parameters: bounded in count and time.
const (
	loadRate     = 200              // requests per second
	loadDuration = 10 * time.Second // direct phase; the API-server phase is half as long
	loadInFlight = 64               // at most this many outstanding requests
	loadWarmup   = 2 * time.Second  // unmeasured, before the direct phase
)

// BenchmarkLiveWebhookLoad builds the webhook as the image does, runs it as a process against
// a real kube-apiserver (envtest) with the shipped webhook configuration,
// and measures:
//
//   - direct: after a 2 s warm-up at the same rate (not measured: it opens
//     the connections and faults in the code), 200 AdmissionReview
//     requests per second for 10 s (open loop,
//     Link / probe Service / credentials Secret in turn) over HTTPS to the
//     webhook; latency percentiles as the API server would see them;
//   - apiserver: 200 server-side dry-run creates of the Link per second for
//     5 s through the kube-apiserver (which calls the webhook);
//   - the webhook process's RSS (VmRSS) and peak RSS (VmHWM) afterwards.
//
// It runs once whatever b.N is. Targets (issue 3): p99 < 5 ms, RSS < 50 MiB.
func BenchmarkLiveWebhookLoad(b *testing.B) {
	bin := filepath.Join(b.TempDir(), "webhook")
	// Built as `make images` (hack/images) builds the shipped image.
	if err := repo.GoBuild("./cmd/webhook", bin, "-ldflags=-s -w"); err != nil {
		b.Fatal(err)
	}
	cfg, err := testenv.WebhookConfiguration()
	if err != nil {
		b.Fatal(err)
	}
	hooks, err := testenv.LocalWebhooks(cfg)
	if err != nil {
		b.Fatal(err)
	}
	env := testenv.Start(b, testenv.Options{Webhooks: hooks})
	we := &webhookEnv{Env: env}
	we.kubectl(b, nil, "create", "namespace", trustedNS)
	we.namespaces(b, true, "linkerd-multicluster", "linkerd")
	we.kubectl(b, bindingYAML("home", trustedNS, ""), "apply", "-f", "-")

	wi := env.WebhookInstallOptions
	health, metrics := freeAddr(b), freeAddr(b)
	logPath := filepath.Join(b.TempDir(), "webhook.log")
	logf, err := os.Create(logPath)
	if err != nil {
		b.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(bin, "--kubeconfig", env.Kubeconfig, "--cert-dir", wi.LocalServingCertDir,
		"--bind-address", wi.LocalServingHost, "--port", strconv.Itoa(wi.LocalServingPort),
		"--trusted-namespaces", trustedNS, "--leader-election-namespace", trustedNS,
		"--health-addr", health, "--metrics-addr", metrics)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if b.Failed() {
			if raw, err := os.ReadFile(logPath); err == nil {
				b.Logf("webhook log:\n%s", tail(raw, 8<<10))
			}
		}
	}()
	waitReady(b, "http://"+health+"/readyz")
	loadBefore, _ := os.ReadFile("/proc/loadavg")
	rssStart := procStatusKiB(b, cmd.Process.Pid, "VmRSS")

	// Direct phase.
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(wi.LocalServingCAData)
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: pool, NextProtos: []string{"http/1.1"}},
		MaxIdleConnsPerHost: loadInFlight,
	}}
	h := newHandler(fakeBindings{b: map[string]*mutate.Binding{"home": testBinding("home")}}, fakeNamespaces{})
	reqs := benchRequests(b, h)
	var bodies [][]byte
	var paths []string
	for _, k := range []string{string(mutate.KindLink), string(mutate.KindProbe), string(mutate.KindCredentials)} {
		r := reqs[k]
		review := admissionv1.AdmissionReview{Request: &r.AdmissionRequest}
		review.APIVersion, review.Kind = "admission.k8s.io/v1", "AdmissionReview"
		js, err := json.Marshal(review)
		if err != nil {
			b.Fatal(err)
		}
		bodies = append(bodies, js)
		paths = append(paths, map[string]string{"link": PathLink, "probe": PathService, "credentials": PathSecret}[k])
	}
	url := fmt.Sprintf("https://%s:%d", wi.LocalServingHost, wi.LocalServingPort)
	// Every answer must be a patch: check once before measuring.
	for i := range bodies {
		if err := postReview(hc, url+paths[i], bodies[i], true); err != nil {
			b.Fatalf("%s: %v", paths[i], err)
		}
	}
	send := func(i int) error {
		return postReview(hc, url+paths[i%len(paths)], bodies[i%len(bodies)], false)
	}
	// Warm-up at the same rate, not measured: it opens the keep-alive
	// connections (TLS handshakes) and faults in the binary's code, as a
	// webhook that has been serving for a while has.
	if w := openLoop(loadRate, loadWarmup, send); w.errors > 0 {
		b.Fatalf("warm-up: %d errors, first: %v", w.errors, w.firstErr)
	} else {
		b.Logf("warm-up   sent %d in %s (not measured), latency p50 %s p99 %s max %s", w.n, w.elapsed.Round(time.Millisecond), w.pct(50), w.pct(99), w.pct(100))
	}
	direct := openLoop(loadRate, loadDuration, send)

	// Through the API server: dry-run creates of the Link.
	link := &unstructured.Unstructured{}
	if err := json.Unmarshal(mustRaw(b, reqs[string(mutate.KindLink)]), &link.Object); err != nil {
		b.Fatal(err)
	}
	viaAPI := openLoop(loadRate, loadDuration/2, func(int) error {
		l := link.DeepCopy()
		if err := env.Client.Create(context.Background(), l, client.DryRunAll); err != nil {
			return err
		}
		if a, _, _ := unstructured.NestedString(l.Object, "spec", "gatewayAddress"); !strings.HasPrefix(a, "tunnel-home-gw.") {
			return fmt.Errorf("dry-run Link not rewritten: gatewayAddress %q", a)
		}
		return nil
	})
	loadAfter, _ := os.ReadFile("/proc/loadavg")
	b.Logf("machine load average (1m 5m 15m) before: %s, after: %s", strings.Join(strings.Fields(string(loadBefore))[:3], " "), strings.Join(strings.Fields(string(loadAfter))[:3], " "))
	rss := procStatusKiB(b, cmd.Process.Pid, "VmRSS")
	hwm := procStatusKiB(b, cmd.Process.Pid, "VmHWM")
	b.Logf("webhook RSS after load: anonymous %.1f MiB, file-backed (binary text) %.1f MiB",
		float64(procStatusKiB(b, cmd.Process.Pid, "RssAnon"))/1024, float64(procStatusKiB(b, cmd.Process.Pid, "RssFile"))/1024)
	under1, total := webhookLatencyUnder(b, "http://"+metrics+"/metrics", 0.001)
	under10, _ := webhookLatencyUnder(b, "http://"+metrics+"/metrics", 0.01)
	heap, sys := goMemstat(b, "http://"+metrics+"/metrics", "go_memstats_heap_inuse_bytes"), goMemstat(b, "http://"+metrics+"/metrics", "go_memstats_sys_bytes")
	b.Logf("webhook Go memory after load: heap in use %.1f MiB, obtained from the OS %.1f MiB", heap/(1<<20), sys/(1<<20))

	for _, r := range []struct {
		name string
		res  loadResult
	}{{"direct", direct}, {"apiserver", viaAPI}} {
		b.Logf("%-9s sent %d in %s (%.0f req/s), errors %d, latency p50 %s p99 %s max %s",
			r.name, r.res.n, r.res.elapsed.Round(time.Millisecond), float64(r.res.n)/r.res.elapsed.Seconds(),
			r.res.errors, r.res.pct(50), r.res.pct(99), r.res.pct(100))
		if r.res.errors > 0 {
			b.Errorf("%s: %d errors, first: %v", r.name, r.res.errors, r.res.firstErr)
		}
	}
	b.Logf("webhook RSS: %.1f MiB at start, %.1f MiB after load, peak %.1f MiB; server-side histogram: %d of %d admissions <= 1 ms, %d <= 10 ms",
		float64(rssStart)/1024, float64(rss)/1024, float64(hwm)/1024, under1, total, under10)
	b.Logf("targets: p99 < 5 ms (direct %s: %s), RSS < 50 MiB (peak %.1f MiB: %s)",
		direct.pct(99), verdict(direct.pct(99) < 5*time.Millisecond), float64(hwm)/1024, verdict(hwm < 50*1024))
	b.ReportMetric(ms(direct.pct(50)), "p50-ms")
	b.ReportMetric(ms(direct.pct(99)), "p99-ms")
	b.ReportMetric(ms(viaAPI.pct(99)), "apiserver-p99-ms")
	b.ReportMetric(float64(hwm)/1024, "peak-RSS-MiB")
	b.ReportMetric(float64(direct.n)/direct.elapsed.Seconds(), "req/s")
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func mustRaw(b *testing.B, r admission.Request) []byte { return r.Object.Raw }

// postReview sends one AdmissionReview and checks the answer.
func postReview(hc *http.Client, url string, body []byte, wantPatch bool) error {
	resp, err := hc.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var review admissionv1.AdmissionReview
	if err := json.NewDecoder(resp.Body).Decode(&review); err != nil {
		return fmt.Errorf("HTTP %d: %w", resp.StatusCode, err)
	}
	if review.Response == nil || !review.Response.Allowed {
		return fmt.Errorf("HTTP %d: not allowed: %+v", resp.StatusCode, review.Response)
	}
	if wantPatch && len(review.Response.Patch) == 0 {
		return fmt.Errorf("no patch (warnings %q)", review.Response.Warnings)
	}
	return nil
}

type loadResult struct {
	n, errors int
	firstErr  error
	elapsed   time.Duration
	lat       []time.Duration // sorted
}

// pct returns the p-th percentile latency (100 = max).
func (r loadResult) pct(p float64) time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	i := int(float64(len(r.lat))*p/100+0.5) - 1
	return r.lat[max(0, min(i, len(r.lat)-1))]
}

// openLoop starts one call per 1/rate seconds for d, whatever the latency
// of earlier calls (so slow answers cannot hide queueing), with at most
// loadInFlight outstanding; latency runs from the scheduled start.
func openLoop(rate int, d time.Duration, call func(i int) error) loadResult {
	total := int(d.Seconds() * float64(rate))
	interval := time.Second / time.Duration(rate)
	sem := make(chan struct{}, loadInFlight)
	var mu sync.Mutex
	var wg sync.WaitGroup
	res := loadResult{lat: make([]time.Duration, 0, total)}
	start := time.Now()
	for i := 0; i < total; i++ {
		at := start.Add(time.Duration(i) * interval)
		time.Sleep(time.Until(at))
		sem <- struct{}{}
		wg.Add(1)
		go func(i int, at time.Time) {
			defer func() { <-sem; wg.Done() }()
			err := call(i)
			lat := time.Since(at)
			mu.Lock()
			defer mu.Unlock()
			res.n++
			res.lat = append(res.lat, lat)
			if err != nil {
				res.errors++
				if res.firstErr == nil {
					res.firstErr = err
				}
			}
		}(i, at)
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	slices.Sort(res.lat)
	return res
}

// procStatusKiB reads a "Vm*" line of /proc/<pid>/status in KiB.
func procStatusKiB(b *testing.B, pid int, key string) int64 {
	b.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), key+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return n
		}
	}
	b.Fatalf("no %s in /proc/%d/status", key, pid)
	return 0
}

// webhookLatencyUnder reads controller-runtime's webhook latency histogram
// from /metrics (buckets 1e-8 s × 10^k, all paths summed): how many
// admissions took at most le seconds (le must be a bucket bound), of all.
func webhookLatencyUnder(b *testing.B, url string, le float64) (under, total int64) {
	b.Helper()
	resp, err := http.Get(url)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "controller_runtime_webhook_latency_seconds_bucket{") {
			continue
		}
		_, rest, _ := strings.Cut(line, `le="`)
		bound, _, _ := strings.Cut(rest, `"`)
		fields := strings.Fields(line)
		n, _ := strconv.ParseFloat(fields[len(fields)-1], 64)
		if bound == "+Inf" {
			total += int64(n)
			continue
		}
		if f, err := strconv.ParseFloat(bound, 64); err == nil && f > le*0.999 && f < le*1.001 {
			under += int64(n)
		}
	}
	return under, total
}

// goMemstat reads one unlabelled gauge from /metrics.
func goMemstat(b *testing.B, url, name string) float64 {
	b.Helper()
	resp, err := http.Get(url)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}
