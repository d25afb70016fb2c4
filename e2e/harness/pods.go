package harness

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The pod stand-in. There are no pods, no kubelet, no Deployment controller
// and no EndpointSlice controller for our workloads here, so the harness
// stands in for them: every rendered Deployment the e2e runs has its
// replicas as processes (Pod, started by startPod with PodProcess), and
// one loop probes each process's readiness probe (the rendered one; a
// process that exited is not ready) and writes what Kubernetes would:
//   - the Deployment's status (replicas, ready and available counts, the
//     Available condition), which `linkerd-tunnel check` reads;
//   - one EndpointSlice per Service that selects the Deployment's pods,
//     which the API server routes admission calls by and the webhook reads
//     the ready tunnel-server addresses from.
//
// It notices a dead process within one probe interval (podProbeInterval),
// faster than a kubelet's readiness probe: e2e failover times leave the
// kubelet's detection time out.
const (
	podProbeInterval = 200 * time.Millisecond
	// PodSliceManager is the endpointslice.kubernetes.io/managed-by value
	// of the slices the stand-in writes (Kubernetes' controller leaves
	// slices managed by others alone).
	PodSliceManager = "e2e.l5d-tunnel.io"
)

// Pod is one replica of a rendered Deployment, run as a process.
type Pod struct {
	Name, IP   string
	CP         *ControlPlane
	NS         *Netns
	Deployment *appsv1.Deployment
	Proc       *Proc
	readyURL   string
	hc         *http.Client // dials inside NS, for the readiness probe
}

// podStandIn is the stand-in's state.
type podStandIn struct {
	mu      sync.Mutex
	pods    []*Pod
	ready   map[string][]string // Deployment key -> ready IPs last written
	written map[string]bool     // Deployment key -> written at least once
	cancel  context.CancelFunc
	done    chan struct{}
}

func deploymentKey(cp *ControlPlane, d *appsv1.Deployment) string {
	return cp.Cfg.Name + "/" + d.Namespace + "/" + d.Name
}

// startPod runs replica name of d (at ip, inside ns) as a process of bin and
// registers it with the stand-in. override and extra are PodProcess's.
func (t *Topology) startPod(ctx context.Context, cp *ControlPlane, ns *Netns, d *appsv1.Deployment, name, ip, bin string,
	override map[string]string, extra []string) (*Pod, error) {
	pp := PodProcess{
		Deployment: d, PodName: name, PodIP: ip,
		Dir:      filepath.Join(t.Cfg.WorkDir, "pods", cp.Cfg.Name+"-"+name),
		Volume:   volumeFiles(ctx, cp, d.Namespace),
		Override: override, ExtraArgs: extra,
	}
	args, env, err := pp.Command()
	if err != nil {
		return nil, err
	}
	p, err := StartProc(ns, t.Cfg.WorkDir, cp.Cfg.Name+"-"+name, bin, args, env)
	if err != nil {
		return nil, err
	}
	pod := &Pod{Name: name, IP: ip, CP: cp, NS: ns, Deployment: d, Proc: p, readyURL: pp.ReadinessURL(),
		hc: &http.Client{Timeout: time.Second, Transport: &http.Transport{DialContext: ns.DialContext, DisableKeepAlives: true}}}
	t.pods.mu.Lock()
	t.pods.pods = append(t.pods.pods, pod)
	t.pods.mu.Unlock()
	return pod, nil
}

// removePod forgets a pod (its process was stopped): the next round writes
// the Deployment and slices without it.
func (t *Topology) removePod(p *Proc) {
	t.pods.mu.Lock()
	defer t.pods.mu.Unlock()
	t.pods.pods = slices.DeleteFunc(t.pods.pods, func(x *Pod) bool { return x.Proc == p })
}

// startPodStandIn starts the loop and waits until it wrote every running
// Deployment once.
func (t *Topology) startPodStandIn(ctx context.Context) error {
	t.pods.mu.Lock()
	if t.pods.cancel != nil {
		t.pods.mu.Unlock()
		return nil
	}
	runCtx, cancel := context.WithCancel(context.Background())
	t.pods.cancel, t.pods.done = cancel, make(chan struct{})
	t.pods.ready, t.pods.written = map[string][]string{}, map[string]bool{}
	t.pods.mu.Unlock()
	go t.runPodStandIn(runCtx)
	return t.waitPodsWritten(ctx)
}

// waitPodsWritten waits until the stand-in has written the state of every
// registered pod's Deployment at least once.
func (t *Topology) waitPodsWritten(ctx context.Context) error {
	return Poll(ctx, 30*time.Second, func() error {
		t.pods.mu.Lock()
		defer t.pods.mu.Unlock()
		for _, p := range t.pods.pods {
			if k := deploymentKey(p.CP, p.Deployment); !t.pods.written[k] {
				return fmt.Errorf("the pod stand-in has not written %s yet", k)
			}
		}
		return nil
	})
}

// stop ends the stand-in (what it wrote stays).
func (s *podStandIn) stop() {
	s.mu.Lock()
	cancel, done := s.cancel, s.done
	s.cancel = nil
	s.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

func (t *Topology) runPodStandIn(ctx context.Context) {
	defer close(t.pods.done)
	last := map[string]string{} // Deployment key -> state written
	seen := map[string]*Pod{}   // Deployment key -> a pod of it (its cluster and Deployment)
	lastErr := map[string]string{}
	tick := time.NewTicker(podProbeInterval)
	defer tick.Stop()
	for {
		t.pods.mu.Lock()
		pods := slices.Clone(t.pods.pods)
		t.pods.mu.Unlock()
		groups := map[string][]*Pod{}
		for _, p := range pods {
			k := deploymentKey(p.CP, p.Deployment)
			groups[k] = append(groups[k], p)
			seen[k] = p
		}
		// Every Deployment that ever had a pod: one whose last pod was
		// removed is written with none.
		for _, k := range slices.Sorted(maps.Keys(seen)) {
			state := map[string]bool{}
			for _, p := range groups[k] {
				state[p.IP] = !p.Proc.Exited() && p.probe(ctx)
			}
			ready := readyList(state)
			sig := fmt.Sprint(ready, len(state))
			if sig == last[k] {
				continue
			}
			if err := t.writePods(ctx, seen[k].CP, seen[k].Deployment, state); err != nil {
				if ctx.Err() != nil {
					return
				}
				if err.Error() != lastErr[k] {
					t.logf("pod stand-in %s: %v (retrying)", k, err)
					lastErr[k] = err.Error()
				}
				continue
			}
			last[k], lastErr[k] = sig, ""
			t.pods.mu.Lock()
			t.pods.ready[k], t.pods.written[k] = ready, true
			t.pods.mu.Unlock()
			t.logf("pod stand-in %s: ready %v of %d", k, ready, len(state))
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// probe runs the pod's readiness probe once, from inside its namespace.
func (p *Pod) probe(ctx context.Context) bool {
	if p.readyURL == "" {
		return true // no readiness probe: ready once started
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.readyURL, nil)
	if err != nil {
		return false
	}
	resp, err := p.hc.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode >= 200 && resp.StatusCode < 400
}

func readyList(state map[string]bool) []string {
	var out []string
	for ip, ok := range state {
		if ok {
			out = append(out, ip)
		}
	}
	slices.Sort(out) // addresses of the same length here: text order is numeric order
	return out
}

// writePods writes d's status and the EndpointSlices of the Services that
// select its pods, for pods at the addresses of state (true = ready).
func (t *Topology) writePods(ctx context.Context, cp *ControlPlane, d *appsv1.Deployment, state map[string]bool) error {
	if err := writeDeploymentStatus(ctx, cp.Client, d, state); err != nil {
		return err
	}
	var svcs corev1.ServiceList
	if err := cp.Client.List(ctx, &svcs, client.InNamespace(d.Namespace)); err != nil {
		return err
	}
	podLabels := labels.Set(d.Spec.Template.Labels)
	for i := range svcs.Items {
		svc := &svcs.Items[i]
		if len(svc.Spec.Selector) == 0 || !labels.SelectorFromSet(svc.Spec.Selector).Matches(podLabels) {
			continue
		}
		if err := writeSlice(ctx, cp.Client, svc, d, state); err != nil {
			return fmt.Errorf("EndpointSlice of %s/%s: %w", svc.Namespace, svc.Name, err)
		}
	}
	return nil
}

// writeDeploymentStatus writes what the Deployment controller would for
// len(state) pods of which the ready ones are available (minReadySeconds 0).
func writeDeploymentStatus(ctx context.Context, c client.Client, d *appsv1.Deployment, state map[string]bool) error {
	live := &appsv1.Deployment{}
	if err := c.Get(ctx, client.ObjectKeyFromObject(d), live); err != nil {
		return err
	}
	ready := int32(len(readyList(state)))
	want := ptr.Deref(live.Spec.Replicas, 1)
	// maxUnavailable: the rolling update's, 25% rounded down by default.
	maxUnavailable := want / 4
	if ru := live.Spec.Strategy.RollingUpdate; ru != nil && ru.MaxUnavailable != nil {
		v, err := intstr.GetScaledValueFromIntOrPercent(ru.MaxUnavailable, int(want), false)
		if err != nil {
			return fmt.Errorf("deployment %s: maxUnavailable: %w", d.Name, err)
		}
		maxUnavailable = int32(v)
	}
	cond := appsv1.DeploymentCondition{Type: appsv1.DeploymentAvailable, Status: corev1.ConditionFalse,
		Reason: "MinimumReplicasUnavailable", Message: "Deployment does not have minimum availability.",
		LastUpdateTime: metav1.Now(), LastTransitionTime: metav1.Now()}
	if ready > 0 && ready >= want-maxUnavailable {
		cond.Status, cond.Reason, cond.Message = corev1.ConditionTrue, "MinimumReplicasAvailable", "Deployment has minimum availability."
	}
	live.Status = appsv1.DeploymentStatus{
		ObservedGeneration: live.Generation,
		Replicas:           int32(len(state)),
		UpdatedReplicas:    int32(len(state)),
		ReadyReplicas:      ready,
		AvailableReplicas:  ready,
		// Negative counts are refused: len(state) >= ready.
		UnavailableReplicas: max(want-ready, 0),
		Conditions:          []appsv1.DeploymentCondition{cond},
	}
	return c.Status().Update(ctx, live)
}

// writeSlice creates or updates the stand-in's EndpointSlice of svc.
func writeSlice(ctx context.Context, c client.Client, svc *corev1.Service, d *appsv1.Deployment, state map[string]bool) error {
	s := &discoveryv1.EndpointSlice{}
	s.Name, s.Namespace = svc.Name+"-e2e", svc.Namespace
	err := c.Get(ctx, client.ObjectKeyFromObject(s), s)
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	create := apierrors.IsNotFound(err)
	s.Labels = map[string]string{discoveryv1.LabelServiceName: svc.Name, discoveryv1.LabelManagedBy: PodSliceManager}
	s.AddressType = discoveryv1.AddressTypeIPv4
	s.Ports = nil
	containerPorts := d.Spec.Template.Spec.Containers[0].Ports
	for _, p := range svc.Spec.Ports {
		port := p.TargetPort.IntValue()
		if p.TargetPort.StrVal != "" {
			for _, cp := range containerPorts {
				if cp.Name == p.TargetPort.StrVal {
					port = int(cp.ContainerPort)
				}
			}
		}
		if port == 0 {
			port = int(p.Port)
		}
		s.Ports = append(s.Ports, discoveryv1.EndpointPort{Name: ptr.To(p.Name), Port: ptr.To(int32(port)), Protocol: ptr.To(p.Protocol)})
	}
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
	if t.serverDeployment == nil {
		return nil
	}
	return slices.Clone(t.pods.ready[deploymentKey(t.CloudCP, t.serverDeployment)])
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
