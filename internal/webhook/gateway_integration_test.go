package webhook

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/l5d-tunnel/l5d-tunnel/internal/fixtures"
	"github.com/l5d-tunnel/l5d-tunnel/pkg/mutate"
)

// sliceManager marks the EndpointSlices the tests write (standing in for
// Kubernetes' EndpointSlice controller, which envtest does not run).
const sliceManager = "integration-test.l5d-tunnel.io"

// gatewaySlice is the one EndpointSlice of b's headless Service, with one
// endpoint per address (ready as given).
func gatewaySlice(b *mutate.Binding, ready map[string]bool) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To(mutate.PortGateway), Port: ptr.To(b.GatewayPort)}},
	}
	s.Name, s.Namespace = b.Headless+"-test", b.Namespace
	s.Labels = map[string]string{mutate.LabelServiceName: b.Headless, discoveryv1.LabelManagedBy: sliceManager}
	addrs := make([]string, 0, len(ready))
	for a := range ready {
		addrs = append(addrs, a)
	}
	slices.Sort(addrs)
	for _, a := range addrs {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: []string{a},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(ready[a])}})
	}
	return s
}

// applySlice creates s or replaces the stored one's labels and endpoints.
func applySlice(t testing.TB, we *webhookEnv, s *discoveryv1.EndpointSlice) {
	t.Helper()
	ctx := context.Background()
	cur := &discoveryv1.EndpointSlice{}
	err := we.Client.Get(ctx, client.ObjectKeyFromObject(s), cur)
	switch {
	case apierrors.IsNotFound(err):
		err = we.Client.Create(ctx, s.DeepCopy())
	case err == nil:
		cur.Labels, cur.Endpoints, cur.Ports = s.Labels, s.Endpoints, s.Ports
		err = we.Client.Update(ctx, cur)
	}
	if err != nil {
		t.Fatalf("write EndpointSlice %s/%s: %v", s.Namespace, s.Name, err)
	}
}

// linkEvent finds a GatewayAddressChanged Event on Link ns/name whose note
// mentions want.
func linkEvent(we *webhookEnv, ns, name, want string) error {
	var list eventsv1.EventList
	if err := we.Client.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
		return err
	}
	var seen []string
	for _, e := range list.Items {
		if e.Regarding.Kind != mutate.LinkKind || e.Regarding.Name != name || e.Reason != EventGatewayAddressChanged {
			continue
		}
		if strings.Contains(e.Note, want) {
			return nil
		}
		seen = append(seen, e.Note)
	}
	return fmt.Errorf("no %s Event on Link %s/%s mentioning %q (seen %q)", EventGatewayAddressChanged, ns, name, want, seen)
}

// linkWrite is one stored change of the watched Link.
type linkWrite struct {
	at      time.Time
	address string
}

// linkWatch records every write of one Link, with the time this process saw
// it and the gatewayAddress it stored.
type linkWatch struct {
	mu     sync.Mutex
	writes []linkWrite
	cond   chan struct{} // closed and replaced on each write
}

func watchLink(t *testing.T, we *webhookEnv, link *unstructured.Unstructured) *linkWatch {
	t.Helper()
	dc, err := dynamic.NewForConfig(we.Config)
	if err != nil {
		t.Fatal(err)
	}
	gv, err := schema.ParseGroupVersion(link.GetAPIVersion())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w, err := dc.Resource(gv.WithResource("links")).Namespace(link.GetNamespace()).Watch(ctx, metav1.ListOptions{
		FieldSelector:   fields.OneTermEqualSelector("metadata.name", link.GetName()).String(),
		ResourceVersion: link.GetResourceVersion(),
	})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	lw := &linkWatch{cond: make(chan struct{})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range w.ResultChan() {
			u, ok := ev.Object.(*unstructured.Unstructured)
			if ev.Type != watch.Modified || !ok {
				continue
			}
			a, _, _ := unstructured.NestedString(u.Object, "spec", "gatewayAddress")
			lw.mu.Lock()
			lw.writes = append(lw.writes, linkWrite{at: time.Now(), address: a})
			close(lw.cond)
			lw.cond = make(chan struct{})
			lw.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		w.Stop()
		cancel()
		<-done
	})
	return lw
}

// count returns how many writes were seen.
func (lw *linkWatch) count() int {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	return len(lw.writes)
}

// waitFor waits for a write from index from on that stores want and
// returns its time; the bound only detects a hang.
func (lw *linkWatch) waitFor(t *testing.T, from int, want string, bound time.Duration) time.Time {
	t.Helper()
	deadline := time.After(bound)
	for {
		lw.mu.Lock()
		for _, w := range lw.writes[min(from, len(lw.writes)):] {
			if w.address == want {
				lw.mu.Unlock()
				return w.at
			}
		}
		var seen []string
		for _, w := range lw.writes[min(from, len(lw.writes)):] {
			seen = append(seen, w.address)
		}
		cond := lw.cond
		lw.mu.Unlock()
		select {
		case <-cond:
		case <-deadline:
			t.Fatalf("the Link's gatewayAddress did not become %q within %s (writes seen: %q)", want, bound, seen)
		}
	}
}

// TestGatewayFailover: the Link follows the ready addresses of its
// binding's headless Service (issue 12), on a real kube-apiserver, with
// EndpointSlices written as Kubernetes' EndpointSlice controller would.
func TestGatewayFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a control plane")
	}
	// The shipped default debounce (300ms). The bound: the stored
	// Link lists the new addresses within the debounce plus 500 ms of the
	// EndpointSlice change.
	debounce := DefaultOptions().GatewayDebounce
	bound := debounce + 500*time.Millisecond
	we := startWebhookEnv(t, "")

	fc := newCase("failover")
	we.namespaces(t, true, fc.mcNS, fc.l5dNS)
	b := testBinding(fc.cluster)
	b.Namespace = trustedNS
	const podA, podB = "10.244.0.10", "10.244.0.11"
	fqdn := b.HeadlessFQDN("")
	we.kubectl(t, bindingYAML(fc.cluster, trustedNS, ""), "apply", "-f", "-")
	applySlice(t, we, gatewaySlice(b, map[string]bool{podA: false, podB: false}))
	waitBinding(t, we, fc.cluster)

	// Applied before any pod is ready: the headless name.
	objs := fc.transform(t, fixtures.Newest(), "link.yaml")
	we.apply(t, toYAML(t, objs))
	var link *unstructured.Unstructured
	for _, o := range linkObjectsOf(objs) {
		if k, _ := mutate.Classify(o); k == mutate.KindLink {
			link = we.get(t, o)
		}
	}
	if a, _, _ := unstructured.NestedString(link.Object, "spec", "gatewayAddress"); a != fqdn {
		t.Fatalf("Link applied with no ready pod: gatewayAddress %q, want %q", a, fqdn)
	}
	lw := watchLink(t, we, link)

	step := func(name string, ready map[string]bool, want string) {
		t.Helper()
		from := lw.count()
		applySlice(t, we, gatewaySlice(b, ready))
		changed := time.Now()
		at := lw.waitFor(t, from, want, 30*time.Second)
		took := at.Sub(changed)
		t.Logf("%s: Link gatewayAddress %q %.0f ms after the EndpointSlice change (debounce %s)", name, want, took.Seconds()*1000, debounce)
		if took > bound {
			t.Errorf("%s: the Link followed after %s, want within %s (debounce + 500ms)", name, took, bound)
		}
		if n := lw.count() - from; n != 1 {
			t.Errorf("%s: %d Link writes, want 1", name, n)
		}
	}
	step("first pod ready", map[string]bool{podA: true, podB: false}, podA)
	step("second pod ready", map[string]bool{podA: true, podB: true}, podA+","+podB)
	step("one pod not ready", map[string]bool{podA: true, podB: false}, podA)
	step("both pods ready again", map[string]bool{podA: true, podB: true}, podA+","+podB)

	// Both gone: the headless name; back: the list.
	from := lw.count()
	if err := we.Client.Delete(context.Background(), gatewaySlice(b, nil)); err != nil {
		t.Fatal(err)
	}
	lw.waitFor(t, from, fqdn, 30*time.Second)
	step("both pods back", map[string]bool{podA: true, podB: true}, podA+","+podB)

	// An EndpointSlice write that changes no ready address: no Link write.
	from = lw.count()
	quiet := gatewaySlice(b, map[string]bool{podA: true, podB: true, "10.244.0.12": false})
	applySlice(t, we, quiet)
	time.Sleep(debounce + time.Second)
	if n := lw.count() - from; n != 0 {
		t.Errorf("an EndpointSlice change without a ready-address change made %d Link writes, want 0", n)
	}

	// A burst of 10 readiness changes inside the debounce: at most 2 writes.
	from = lw.count()
	start := time.Now()
	for i := range 10 {
		ready := map[string]bool{podA: true, podB: i%2 == 1}
		if i == 9 {
			ready = map[string]bool{podA: false, podB: true}
		}
		applySlice(t, we, gatewaySlice(b, ready))
	}
	burst := time.Since(start)
	lw.waitFor(t, from, podB, 30*time.Second)
	time.Sleep(debounce + time.Second) // any late write would show now
	writes := lw.count() - from
	t.Logf("burst of 10 readiness changes in %.0f ms: %d Link writes", burst.Seconds()*1000, writes)
	if burst >= debounce {
		t.Errorf("the burst took %s, longer than the debounce %s: the check below does not hold its premise on this machine", burst, debounce)
	}
	if writes > 2 {
		t.Errorf("a burst of 10 readiness changes made %d Link writes, want at most 2", writes)
	}

	// Events and metrics.
	eventually(t, 30*time.Second, "Event on the Link", func() error {
		return linkEvent(we, fc.mcNS, link.GetName(), podA+","+podB+" -> "+podB)
	})
	resp, err := http.Get("http://" + we.metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	series := func(name string) string {
		return fmt.Sprintf(`%s{binding=%q`, name, b.String())
	}
	var updates, ready string
	for _, l := range strings.Split(string(body), "\n") {
		switch {
		case strings.HasPrefix(l, series("l5d_tunnel_webhook_link_updates_total")+`,gateway="changed"} `):
			updates = l
		case strings.HasPrefix(l, series("l5d_tunnel_webhook_gateway_ready_addresses")+"} "):
			ready = l
		}
	}
	if f := strings.Fields(updates); len(f) != 2 || f[1] == "0" {
		t.Errorf("link updates metric for %s: %q", b, updates)
	} else if n, _ := strconv.Atoi(f[1]); n < 7 {
		t.Errorf("link updates metric %q counts fewer than the 7 changes made", updates)
	}
	if f := strings.Fields(ready); len(f) != 2 || f[1] != "1" {
		t.Errorf("ready addresses metric for %s: %q, want 1", b, ready)
	}

	// The other link objects are untouched by the addresses: the probe and
	// the credentials keep pointing at the ClusterIP Service.
	for _, o := range linkObjectsOf(objs) {
		kind, _ := mutate.Classify(o)
		if kind == mutate.KindLink {
			continue
		}
		if err := rewrittenErr(kind, we.get(t, o), b); err != nil {
			t.Error(err)
		}
	}
}

// TestGatewayAddressesOff: --gateway-ready-addresses=false keeps the
// headless Service's name whatever is ready, at admission and in the
// reconciler.
func TestGatewayAddressesOff(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a control plane")
	}
	we := startControlPlane(t, "")
	we.kubectl(t, nil, "create", "namespace", trustedNS)
	we.namespaces(t, true, probeNS)
	we.runWebhook(t, func(o *Options) { o.GatewayAddresses = false })

	fc := newCase("fqdn-only")
	we.namespaces(t, true, fc.mcNS, fc.l5dNS)
	b := testBinding(fc.cluster)
	b.Namespace = trustedNS
	we.kubectl(t, bindingYAML(fc.cluster, trustedNS, ""), "apply", "-f", "-")
	applySlice(t, we, gatewaySlice(b, map[string]bool{"10.244.0.10": true}))
	waitBinding(t, we, fc.cluster)
	objs := fc.transform(t, fixtures.Newest(), "link.yaml")
	we.apply(t, toYAML(t, objs))
	applySlice(t, we, gatewaySlice(b, map[string]bool{"10.244.0.10": true, "10.244.0.11": true}))
	time.Sleep(DefaultOptions().GatewayDebounce + time.Second) // a reconcile would have written by now
	for _, o := range linkObjectsOf(objs) {
		kind, _ := mutate.Classify(o)
		if err := rewrittenErr(kind, we.get(t, o), b); err != nil { // b has no addresses: the headless name
			t.Error(err)
		}
	}
}
