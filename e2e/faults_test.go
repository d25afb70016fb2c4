package e2e

import (
	"context"
	"fmt"
	"net"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/l5d-tunnel/l5d-tunnel/e2e/harness"
	"github.com/l5d-tunnel/l5d-tunnel/internal/fixtures"
	"github.com/l5d-tunnel/l5d-tunnel/internal/webhook"
)

// metric logs one measured figure as a line `make e2e` keeps.
func metric(t *testing.T, name string, labels map[string]string, v float64) {
	t.Helper()
	var l []string
	for _, k := range []string{"version", "file", "fault", "what"} {
		if labels[k] != "" {
			l = append(l, fmt.Sprintf("%s=%q", k, labels[k]))
		}
	}
	t.Logf("e2e_%s{%s} %.2f", name, strings.Join(l, ","), v)
}

// 5. What Linkerd's service mirror writes is stored exactly as written, in
// namespaces the webhook watches.
func (lt *linkTest) testMirrored(ctx context.Context, t *testing.T) {
	objs, err := fixtures.Objects(lt.version, "mirrored.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c := lt.topo.CloudCP.Client
	for _, o := range objs {
		obj := o.DeepCopy()
		unstructured.RemoveNestedField(obj.Object, "status")
		unstructured.RemoveNestedField(obj.Object, "metadata", "resourceVersion")
		unstructured.RemoveNestedField(obj.Object, "metadata", "creationTimestamp")
		// the service mirror writes with plain Create
		if err := c.Create(ctx, obj); err != nil {
			t.Fatalf("create %s %s/%s as the service mirror would: %v", o.GetKind(), o.GetNamespace(), o.GetName(), err)
		}
	}
	for _, o := range objs {
		got := &unstructured.Unstructured{}
		got.SetGroupVersionKind(o.GroupVersionKind())
		if err := c.Get(ctx, types.NamespacedName{Namespace: o.GetNamespace(), Name: o.GetName()}, got); err != nil {
			t.Fatal(err)
		}
		id := o.GetKind() + " " + o.GetNamespace() + "/" + o.GetName()
		var p []string
		p = append(p, subset("label", o.GetLabels(), got.GetLabels())...)
		p = append(p, subset("annotation", o.GetAnnotations(), got.GetAnnotations())...)
		if hasTunnelAnnotation(got) {
			p = append(p, "carries an l5d-tunnel.io/ annotation")
		}
		switch o.GetKind() {
		case "Service":
			wantType := fieldString(o.Object, "spec", "type")
			if wantType == "" {
				wantType = "ClusterIP"
			}
			if gt := fieldString(got.Object, "spec", "type"); gt != wantType {
				p = append(p, fmt.Sprintf("type %s, want %s", gt, wantType))
			}
			if ip := fieldString(o.Object, "spec", "clusterIP"); ip != "" && ip != fieldString(got.Object, "spec", "clusterIP") {
				p = append(p, fmt.Sprintf("clusterIP %s, want %s", fieldString(got.Object, "spec", "clusterIP"), ip))
			}
			if en := fieldString(got.Object, "spec", "externalName"); en != "" {
				p = append(p, "externalName "+en)
			}
			if a, b := portNumbers(o.Object), portNumbers(got.Object); !reflect.DeepEqual(a, b) {
				p = append(p, fmt.Sprintf("ports %v, want %v", b, a))
			}
		case "Endpoints":
			if a, b := endpointAddrs(o.Object), endpointAddrs(got.Object); !reflect.DeepEqual(a, b) {
				p = append(p, fmt.Sprintf("subsets %v, want %v", b, a))
			}
		}
		for _, problem := range p {
			t.Errorf("5: %s: %s", id, problem)
		}
	}
}

func portNumbers(obj map[string]any) []string {
	ports, _, _ := unstructured.NestedSlice(obj, "spec", "ports")
	var out []string
	for _, p := range ports {
		m := p.(map[string]any)
		out = append(out, fieldString(m, "name")+"="+fieldString(m, "port")+"->"+fieldString(m, "targetPort"))
	}
	return out
}

func endpointAddrs(obj map[string]any) []string {
	subsets, _, _ := unstructured.NestedSlice(obj, "subsets")
	var out []string
	for _, s := range subsets {
		m := s.(map[string]any)
		for _, key := range []string{"addresses", "notReadyAddresses"} {
			as, _, _ := unstructured.NestedSlice(m, key)
			for _, a := range as {
				out = append(out, key+":"+fieldString(a.(map[string]any), "ip"))
			}
		}
		ps, _, _ := unstructured.NestedSlice(m, "ports")
		for _, pp := range ps {
			pm := pp.(map[string]any)
			out = append(out, "port:"+fieldString(pm, "name")+"="+fieldString(pm, "port"))
		}
	}
	return out
}

// 6. Faults: each time, api/probe/gateway work again within recoveryBound
// after the fault ends, and transfers after recovery are intact.
func (lt *linkTest) testFaults(ctx context.Context, t *testing.T, cs checkSpec) {
	topo := lt.topo
	probeFails := func(t *testing.T, during string) {
		t.Helper()
		res, err := harness.RunHelper(ctx, topo.Cloud, harness.HelperRequest{Op: "probe", URL: cs.probeURL, Timeout: 3 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if res.Err == "" {
			t.Errorf("the probe still answered %d %s: the fault was not one", res.Status, during)
		}
	}
	faults := []struct {
		name   string
		inject func(t *testing.T) (ended time.Time, after func())
	}{
		{"tunnel server killed and restarted", func(t *testing.T) (time.Time, func()) {
			topo.KillTunnelServer()
			probeFails(t, "with the tunnel server killed")
			if err := topo.StartTunnelServer(ctx); err != nil {
				t.Fatal(err)
			}
			return time.Now(), nil
		}},
		{"client SIGSTOPped and a new client started", func(t *testing.T) (time.Time, func()) {
			old := topo.TunnelClients[len(topo.TunnelClients)-1]
			if err := topo.StopClient(old); err != nil {
				t.Fatal(err)
			}
			started := time.Now()
			if _, err := topo.StartTunnelClient(ctx); err != nil {
				t.Fatal(err)
			}
			// the fault is over once the new client has its session
			if err := topo.WaitClientReady(ctx, 30*time.Second); err != nil {
				t.Fatal(err)
			}
			metric(t, "client_connect_seconds", map[string]string{"version": lt.version, "file": lt.file}, time.Since(started).Seconds())
			return time.Now(), func() { old.Kill() }
		}},
		{"veth link down 10s", func(t *testing.T) (time.Time, func()) {
			if err := topo.SetLink(false); err != nil {
				t.Fatal(err)
			}
			down := time.Now()
			probeFails(t, "with the link down")
			time.Sleep(10*time.Second - time.Since(down))
			if err := topo.SetLink(true); err != nil {
				t.Fatal(err)
			}
			return time.Now(), nil
		}},
	}
	for _, f := range faults {
		t.Run(f.name, func(t *testing.T) {
			// A transfer in flight when the fault hits may fail, but must
			// never come back with different bytes. The tunnel does not
			// depend on the Linkerd version: once, with the newest fixture.
			inflight := make(chan harness.HelperResult, 1)
			var inflightDone time.Time
			withInflight := lt.version == fixtures.Newest()
			if withInflight {
				go func() {
					res, err := harness.RunHelper(ctx, topo.Cloud, lt.mtlsRequest(cs, 32<<20, 1))
					if err != nil {
						res.Err = err.Error()
					}
					inflightDone = time.Now()
					inflight <- res
				}()
				time.Sleep(150 * time.Millisecond)
			}
			start := time.Now()
			ended, after := f.inject(t)
			if after != nil {
				defer after()
			}
			rec, res, err := lt.waitTraffic(ctx, cs, recoveryBound)
			if err != nil {
				t.Fatalf("no recovery within %s after %q: %v (parts %v)", recoveryBound, f.name, err, res.Parts)
			}
			labels := map[string]string{"version": lt.version, "file": lt.file, "fault": f.name}
			metric(t, "recovery_seconds", labels, rec.Seconds())
			metric(t, "outage_seconds", labels, ended.Sub(start).Seconds()+rec.Seconds())
			if withInflight {
				select {
				case res := <-inflight:
					outcome := "broken"
					for _, tr := range res.Transfers {
						if tr.Corrupted() {
							t.Errorf("transfer in flight during %q CORRUPTED: sent %d bytes sha256 %s, got %d bytes sha256 %s", f.name, tr.Bytes, tr.SentSHA, tr.Received, tr.GotSHA)
						} else if tr.Intact() {
							outcome = "intact"
							t.Logf("transfer in flight during the fault: 32 MiB intact, sha256 equal")
						} else {
							t.Logf("transfer in flight during the fault: broken cleanly after %d bytes (%s)", tr.Received, tr.Err)
						}
					}
					labels["what"] = "in-flight 32 MiB " + outcome
					metric(t, "inflight_seconds", labels, inflightDone.Sub(start).Seconds())
				case <-time.After(2 * time.Minute):
					t.Errorf("transfer in flight during %q neither finished nor failed within 2m", f.name)
				}
			}
			// transfers after recovery: 4 parallel streams of 4 MiB through the gateway
			m, err := harness.RunHelper(ctx, topo.Cloud, lt.mtlsRequest(cs, 4<<20, 4))
			if err != nil {
				t.Fatal(err)
			}
			for i, tr := range m.Transfers {
				if tr.Corrupted() {
					t.Errorf("transfer %d after recovery CORRUPTED: sent %d bytes sha256 %s, got %d bytes sha256 %s", i, tr.Bytes, tr.SentSHA, tr.Received, tr.GotSHA)
				} else if !tr.Intact() {
					t.Errorf("transfer %d after recovery failed: %s", i, tr.Err)
				}
			}
		})
	}
	// the client's and server's view after the faults
	if body, err := topo.TunnelMetrics(); err == nil {
		for _, l := range strings.Split(body, "\n") {
			if strings.HasPrefix(l, "l5d_tunnel_sessions") || strings.HasPrefix(l, "l5d_tunnel_reconnects") {
				t.Logf("server metric: %s", l)
			}
		}
	}
}

// 7. The reconciler: removing the binding restores the originals; a link
// applied before the binding exists is repaired once it appears.
func (lt *linkTest) testReconciler(ctx context.Context, t *testing.T) {
	topo := lt.topo
	wait := func(what string, check func(*linkObjects) []string) {
		t.Helper()
		start := time.Now()
		var last []string
		err := harness.Poll(ctx, reconcileBound, func() error {
			s, err := lt.stored(ctx)
			if err != nil {
				return err
			}
			if last = check(s); len(last) > 0 {
				return fmt.Errorf("%s", strings.Join(last, "; "))
			}
			return nil
		})
		if err != nil {
			t.Fatalf("7: %s: %v", what, err)
		}
		metric(t, "reconcile_seconds", map[string]string{"version": lt.version, "file": lt.file, "what": what}, time.Since(start).Seconds())
	}

	if err := topo.DeleteBinding(ctx); err != nil {
		t.Fatal(err)
	}
	wait("binding removed: originals restored", lt.checkOriginal)

	if _, err := lt.kubectl(ctx, lt.output, "delete", "--wait=true", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	if _, err := lt.kubectl(ctx, lt.output, "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	s, err := lt.stored(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range lt.checkOriginal(s) {
		t.Errorf("7: applied without a binding, the link must stay as printed: %s", p)
	}
	if err := topo.CreateBinding(ctx); err != nil {
		t.Fatal(err)
	}
	wait("binding created: link applied earlier repaired", func(s *linkObjects) []string { return lt.checkRewritten(s) })
	cs, err := lt.checkSpec(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d, res, err := lt.waitTraffic(ctx, cs, 30*time.Second); err != nil {
		t.Errorf("7: the repaired link does not carry traffic: %v (%v)", err, res.Parts)
	} else {
		t.Logf("7: repaired link carries api, probe and gateway traffic (%.1fs)", d.Seconds())
	}
}

// 8. Failover (issue 12): with two tunnel servers, each with its own client,
// the Link lists both; after a SIGKILL of one, the webhook's reconciler
// narrows the Link to the survivor, and traffic through the survivor goes
// on intact. The second server is the one killed: in this topology the
// ClusterIP binding name (API and probe) maps to the first server's address
// (there is no kube-proxy to balance it), so killing the first would test
// the missing kube-proxy, not the Link.
func (lt *linkTest) testFailover(ctx context.Context, t *testing.T) {
	topo := lt.topo
	c := topo.CloudCP.Client
	linkAddress := func() (string, error) {
		got := &unstructured.Unstructured{}
		got.SetGroupVersionKind(lt.original.link.GroupVersionKind())
		if err := c.Get(ctx, types.NamespacedName{Namespace: lt.original.link.GetNamespace(), Name: lt.original.link.GetName()}, got); err != nil {
			return "", err
		}
		return fieldString(got.Object, "spec", "gatewayAddress"), nil
	}
	// waitAddress polls the stored Link (every 20 ms, so the measured time
	// is that fine) until its gatewayAddress is want; it returns the other
	// values seen on the way.
	waitAddress := func(what, want string) (time.Duration, []string) {
		t.Helper()
		start := time.Now()
		var seen []string
		err := harness.Poll(ctx, 30*time.Second, func() error {
			a, err := linkAddress()
			if err != nil {
				return err
			}
			if a != want {
				if len(seen) == 0 || seen[len(seen)-1] != a {
					seen = append(seen, a)
				}
				time.Sleep(20 * time.Millisecond)
				return fmt.Errorf("gatewayAddress %q", a)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("8: %s: the Link's gatewayAddress is not %q: %v", what, want, err)
		}
		return time.Since(start), seen
	}
	cs, err := lt.checkSpec(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, port, err := net.SplitHostPort(cs.gatewayAddr)
	if err != nil {
		t.Fatal(err)
	}
	through := func(ip string, bytes int64, streams int) harness.HelperRequest {
		cs := cs
		cs.gatewayAddr = net.JoinHostPort(ip, port)
		return lt.mtlsRequest(cs, bytes, streams)
	}
	intact := func(what string, res harness.HelperResult, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("8: %s: %v", what, err)
		}
		if res.Err != "" && len(res.Transfers) == 0 {
			t.Errorf("8: %s: %s", what, res.Err)
		}
		for i, tr := range res.Transfers {
			if !tr.Intact() {
				t.Errorf("8: %s: transfer %d not intact: %d of %d bytes, %s", what, i, tr.Received, tr.Bytes, tr.Err)
			}
		}
	}

	t.Cleanup(topo.StopSecondTunnel)
	if err := topo.StartSecondTunnel(ctx); err != nil {
		t.Fatal(err)
	}
	both := harness.TunnelPodIP + "," + harness.TunnelPod2IP
	d, _ := waitAddress("second tunnel server ready", both)
	t.Logf("8: second tunnel server ready: Link gatewayAddress %q after %.2fs", both, d.Seconds())
	for _, ip := range []string{harness.TunnelPodIP, harness.TunnelPod2IP} {
		res, err := harness.RunHelper(ctx, topo.Cloud, through(ip, 1<<20, 2))
		intact("mTLS through "+ip+" before the kill", res, err)
	}

	// A transfer through the survivor runs across the kill.
	inflight := make(chan harness.HelperResult, 1)
	go func() {
		res, err := harness.RunHelper(ctx, topo.Cloud, through(harness.TunnelPodIP, 16<<20, 1))
		if err != nil {
			res.Err = err.Error()
		}
		inflight <- res
	}()
	time.Sleep(100 * time.Millisecond)
	topo.KillSecondServer()
	followed, seen := waitAddress("second tunnel server SIGKILLed", harness.TunnelPodIP)
	metric(t, "failover_seconds", map[string]string{"version": lt.version, "file": lt.file, "what": "SIGKILL to Link update"}, followed.Seconds())
	t.Logf("8: SIGKILL of the second server: Link gatewayAddress %q after %.2fs (values on the way: %q)", harness.TunnelPodIP, followed.Seconds(), seen)
	for _, v := range seen {
		if v != both {
			t.Errorf("8: the Link held %q on the way (the survivor was ready all along)", v)
		}
	}
	select {
	case res := <-inflight:
		intact("16 MiB through the survivor across the kill", res, nil)
	case <-time.After(2 * time.Minute):
		t.Fatal("8: the transfer through the survivor neither finished nor failed within 2m")
	}
	dead, err := harness.RunHelper(ctx, topo.Cloud, through(harness.TunnelPod2IP, 1024, 1))
	if err == nil && dead.Err == "" {
		t.Errorf("8: the killed server's address still echoes: the kill was not one")
	}
	res, err := harness.RunHelper(ctx, topo.Cloud, through(harness.TunnelPodIP, 4<<20, 4))
	intact("mTLS through the survivor after the Link update", res, err)

	// What an operator sees: an Event on the Link and the webhook's metrics.
	var events eventsv1.EventList
	if err := c.List(ctx, &events, client.InNamespace(lt.original.link.GetNamespace())); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range events.Items {
		if e.Regarding.Name == lt.original.link.GetName() && e.Reason == webhook.EventGatewayAddressChanged &&
			strings.Contains(e.Note, both+" -> "+harness.TunnelPodIP) {
			found = true
			t.Logf("8: Event %s on Link %s: %s", e.Reason, e.Regarding.Name, e.Note)
		}
	}
	if !found {
		t.Errorf("8: no %s Event on the Link for %s -> %s", webhook.EventGatewayAddressChanged, both, harness.TunnelPodIP)
	}
	code, body, err := topo.HTTPGet(topo.Cloud, "http://"+net.JoinHostPort(harness.WebhookPodIP, strconv.Itoa(harness.WebhookMetric))+"/metrics")
	if err != nil || code != 200 {
		t.Fatalf("8: webhook /metrics: %d %v", code, err)
	}
	binding := topo.Binding.Namespace + "/" + topo.Binding.Service
	for _, want := range []string{
		fmt.Sprintf("l5d_tunnel_webhook_gateway_ready_addresses{binding=%q} 1", binding),
		fmt.Sprintf("l5d_tunnel_webhook_link_updates_total{binding=%q,gateway=\"changed\"}", binding),
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("8: webhook metrics lack %s", want)
		}
	}
}
