package harness

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Pod readiness of the tunnel servers. There are no pods, no kubelet and no
// EndpointSlice controller for them here, so the harness stands in for
// both: it probes each started tunnel server's /readyz (the manifests'
// readiness probe; a process that exited is not ready) and keeps one
// EndpointSlice of the binding's headless Service up to date, with one
// endpoint per started server. The webhook reads it as it reads the slices
// Kubernetes writes. The stand-in notices a dead process within one probe
// interval (podProbeInterval), faster than a kubelet's readiness probe:
// e2e failover times leave the kubelet's detection time out.
const (
	podProbeInterval = 200 * time.Millisecond
	// PodSliceManager is the endpointslice.kubernetes.io/managed-by value
	// of the slice the stand-in writes (Kubernetes' controller leaves
	// slices managed by others alone).
	PodSliceManager = "e2e.l5d-tunnel.io"
)

// podReadiness is the stand-in's state.
type podReadiness struct {
	mu      sync.Mutex
	ready   []string // ready addresses last written, sorted
	written bool     // a slice was written at least once
	cancel  context.CancelFunc
	done    chan struct{}
}

// startPodReadiness starts the stand-in and waits until it wrote the slice
// once.
func (t *Topology) startPodReadiness(ctx context.Context) error {
	runCtx, cancel := context.WithCancel(context.Background())
	t.pods.mu.Lock()
	t.pods.cancel, t.pods.done = cancel, make(chan struct{})
	t.pods.mu.Unlock()
	go t.runPodReadiness(runCtx)
	return Poll(ctx, 30*time.Second, func() error {
		t.pods.mu.Lock()
		defer t.pods.mu.Unlock()
		if !t.pods.written {
			return fmt.Errorf("the tunnel-server EndpointSlice was not written yet")
		}
		return nil
	})
}

// stop ends the stand-in (the slice stays as last written).
func (p *podReadiness) stop() {
	p.mu.Lock()
	cancel, done := p.cancel, p.done
	p.cancel = nil
	p.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

func (t *Topology) runPodReadiness(ctx context.Context) {
	defer close(t.pods.done)
	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{DialContext: t.Cloud.DialContext, DisableKeepAlives: true}}
	var last map[string]bool
	var lastErr string
	tick := time.NewTicker(podProbeInterval)
	defer tick.Stop()
	for {
		t.mu.Lock()
		servers := []*Proc{t.TunnelServer, t.SecondServer}
		t.mu.Unlock()
		state := map[string]bool{}
		for i, p := range servers {
			if p == nil {
				continue
			}
			state[tunnelPodIPs[i]] = !p.Exited() && readyz(ctx, hc, tunnelPodIPs[i])
		}
		if last == nil || !mapsEqual(state, last) {
			if err := t.writePodSlice(ctx, state); err != nil {
				if ctx.Err() != nil {
					return
				}
				if err.Error() != lastErr {
					t.logf("tunnel-server EndpointSlice: %v (retrying)", err)
					lastErr = err.Error()
				}
			} else {
				last, lastErr = state, ""
				t.pods.mu.Lock()
				t.pods.ready, t.pods.written = readyList(state), true
				t.pods.mu.Unlock()
				t.logf("tunnel-server pods ready: %v", readyList(state))
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func readyz(ctx context.Context, hc *http.Client, ip string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+net.JoinHostPort(ip, strconv.Itoa(TunnelAdmin))+"/readyz", nil)
	if err != nil {
		return false
	}
	resp, err := hc.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func mapsEqual(a, b map[string]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func readyList(state map[string]bool) []string {
	var out []string
	for ip, ok := range state {
		if ok {
			out = append(out, ip)
		}
	}
	slices.Sort(out) // two IPv4 addresses of the same length: text order is numeric order
	return out
}

// writePodSlice creates or updates the stand-in's EndpointSlice.
func (t *Topology) writePodSlice(ctx context.Context, state map[string]bool) error {
	b := t.Binding
	s := &discoveryv1.EndpointSlice{}
	s.Name, s.Namespace = b.Headless+"-e2e", b.Namespace
	key := client.ObjectKeyFromObject(s)
	c := t.CloudCP.Client
	err := c.Get(ctx, key, s)
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	create := apierrors.IsNotFound(err)
	s.Labels = map[string]string{discoveryv1.LabelServiceName: b.Headless, discoveryv1.LabelManagedBy: PodSliceManager}
	s.AddressType = discoveryv1.AddressTypeIPv4
	s.Ports = []discoveryv1.EndpointPort{{Name: ptr.To("gateway"), Port: ptr.To(b.GatewayPort)}}
	ips := make([]string, 0, len(state))
	for ip := range state {
		ips = append(ips, ip)
	}
	slices.Sort(ips)
	s.Endpoints = nil
	for _, ip := range ips {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: []string{ip},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(state[ip]), Serving: ptr.To(state[ip])}})
	}
	if create {
		return c.Create(ctx, s)
	}
	return c.Update(ctx, s)
}

// ReadyTunnelPods returns the tunnel-server addresses the stand-in last
// wrote as ready, sorted.
func (t *Topology) ReadyTunnelPods() []string {
	t.pods.mu.Lock()
	defer t.pods.mu.Unlock()
	return slices.Clone(t.pods.ready)
}

// GatewayAddress is the Link gatewayAddress the webhook must write now: the
// ready tunnel-server addresses, comma-separated, or the headless Service's
// name when none is ready.
func (t *Topology) GatewayAddress() string {
	if ready := t.ReadyTunnelPods(); len(ready) > 0 {
		return strings.Join(ready, ",")
	}
	return t.Binding.HeadlessFQDN()
}
