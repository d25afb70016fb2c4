package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// requiredEnv makes the Docker test fail instead of skip when no Docker
// Engine answers (CI sets it, as for the root-only e2e).
const requiredEnv = "L5D_E2E_REQUIRED"

// needDocker skips, or fails under L5D_E2E_REQUIRED, without a Docker Engine.
func needDocker(t *testing.T) {
	t.Helper()
	required := os.Getenv(requiredEnv) != ""
	skip := func(format string, args ...any) {
		t.Helper()
		msg := fmt.Sprintf(format, args...)
		if required {
			t.Fatalf("%s, and %s is set", msg, requiredEnv)
		}
		t.Skipf("%s; set %s=1 to make this a failure", msg, requiredEnv)
	}
	if testing.Short() && !required {
		skip("Docker image test skipped in -short mode")
	}
	if _, err := exec.LookPath("docker"); err != nil {
		skip("no docker CLI (%v): cannot load and run the images", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput()
	if err != nil {
		skip("no Docker Engine answers (docker info: %v: %s)", err, bytes.TrimSpace(out))
	}
	t.Logf("Docker Engine %s", bytes.TrimSpace(out))
}

// docker runs the docker CLI and returns its stdout; a non-zero exit fails
// the test with stderr, unless allowFail.
func docker(ctx context.Context, t *testing.T, args ...string) string {
	t.Helper()
	out, err := dockerErr(ctx, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func dockerErr(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "docker", args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("docker %s: %w\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

// cleanupCtx is for t.Cleanup functions, which run after the test's context
// may have expired.
func cleanupCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 30*time.Second)
}

// loadImage docker-loads the host platform's tarball of im and returns the
// image ID to run. The tag the archive carries is checked, and the engine is
// left as it was: a tag or image that existed before is kept or restored.
func loadImage(ctx context.Context, t *testing.T, im builtImage) string {
	t.Helper()
	platform := "linux/" + runtime.GOARCH
	tarball := im.Tarballs[platform]
	if tarball == "" {
		t.Fatalf("%s: no tarball for the host platform %s", im.Name, platform)
	}
	ref := im.Ref.String()
	// The config digest is the engine's image ID.
	configDigest := imageConfigDigest(t, im, platform)
	idBefore, _ := dockerErr(ctx, "image", "inspect", "--format", "{{.Id}}", configDigest)
	refBefore, _ := dockerErr(ctx, "image", "inspect", "--format", "{{.Id}}", ref)
	idBefore, refBefore = strings.TrimSpace(idBefore), strings.TrimSpace(refBefore)
	t.Cleanup(func() {
		ctx, cancel := cleanupCtx()
		defer cancel()
		switch {
		case refBefore == "":
			_, _ = dockerErr(ctx, "image", "rm", ref)
		case refBefore != configDigest:
			_, _ = dockerErr(ctx, "tag", refBefore, ref)
		}
		if idBefore == "" {
			_, _ = dockerErr(ctx, "image", "rm", configDigest)
		}
	})
	out := docker(ctx, t, "load", "--input", tarball)
	if !strings.Contains(out, "Loaded image: "+ref) {
		t.Fatalf("docker load %s: %q, want it to load %s", filepath.Base(tarball), out, ref)
	}
	got := strings.Fields(docker(ctx, t, "image", "inspect", "--format", "{{.Id}} {{.Os}} {{.Architecture}} {{.Config.User}}", ref))
	want := []string{configDigest, "linux", runtime.GOARCH, "65532:65532"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("docker image inspect %s: %q, want %q", ref, got, want)
	}
	t.Logf("docker load %s: %s, image ID %s", filepath.Base(tarball), ref, configDigest)
	return configDigest
}

func imageConfigDigest(t *testing.T, im builtImage, platform string) string {
	t.Helper()
	for _, p := range images(t).Images {
		if p.Name == im.Name {
			h, ok := p.Configs[platform]
			if !ok {
				t.Fatalf("%s: no config for %s", im.Name, platform)
			}
			return h.String()
		}
	}
	t.Fatalf("no image %s", im.Name)
	return ""
}

// The parts of a rendered Deployment that say how its container runs.
type deployment struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Spec struct {
		Template struct {
			Spec podSpec `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type podSpec struct {
	SecurityContext struct {
		RunAsUser    *int64 `yaml:"runAsUser"`
		RunAsGroup   *int64 `yaml:"runAsGroup"`
		FSGroup      *int64 `yaml:"fsGroup"`
		RunAsNonRoot *bool  `yaml:"runAsNonRoot"`
	} `yaml:"securityContext"`
	Containers []container `yaml:"containers"`
	Volumes    []struct {
		Name   string `yaml:"name"`
		Secret *struct {
			DefaultMode *int64 `yaml:"defaultMode"`
		} `yaml:"secret"`
	} `yaml:"volumes"`
}

type container struct {
	Name  string   `yaml:"name"`
	Image string   `yaml:"image"`
	Args  []string `yaml:"args"`
	Env   []struct {
		Name      string `yaml:"name"`
		Value     string `yaml:"value"`
		ValueFrom *struct {
			ResourceFieldRef *struct {
				Resource string `yaml:"resource"`
			} `yaml:"resourceFieldRef"`
			ConfigMapKeyRef *struct {
				Key string `yaml:"key"`
			} `yaml:"configMapKeyRef"`
			FieldRef *struct {
				FieldPath string `yaml:"fieldPath"`
			} `yaml:"fieldRef"`
		} `yaml:"valueFrom"`
	} `yaml:"env"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	Resources struct {
		Limits map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	SecurityContext struct {
		ReadOnlyRootFilesystem   *bool `yaml:"readOnlyRootFilesystem"`
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
		Capabilities             struct {
			Add  []string `yaml:"add"`
			Drop []string `yaml:"drop"`
		} `yaml:"capabilities"`
	} `yaml:"securityContext"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
		ReadOnly  bool   `yaml:"readOnly"`
	} `yaml:"volumeMounts"`
}

// renderedDeployment returns the one Deployment of dist/file.
func renderedDeployment(t *testing.T, file string) (podSpec, container) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(t), "dist", file))
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var found []deployment
	for {
		var d deployment
		if err := dec.Decode(&d); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("dist/%s: %v", file, err)
		}
		if d.Kind == "Deployment" {
			found = append(found, d)
		}
	}
	if len(found) != 1 || len(found[0].Spec.Template.Spec.Containers) != 1 {
		t.Fatalf("dist/%s: want one Deployment with one container, found %d", file, len(found))
	}
	pod := found[0].Spec.Template.Spec
	return pod, pod.Containers[0]
}

// quantity parses the Kubernetes quantities the manifests use for limits
// (plain, m, Ki, Mi, Gi) into base units (cores, bytes).
func quantity(t *testing.T, q string) float64 {
	t.Helper()
	mult := map[string]float64{"m": 1e-3, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}
	for suffix, m := range mult {
		if n, ok := strings.CutSuffix(q, suffix); ok {
			v, err := strconv.ParseFloat(n, 64)
			if err != nil {
				t.Fatalf("quantity %q: %v", q, err)
			}
			return v * m
		}
	}
	v, err := strconv.ParseFloat(q, 64)
	if err != nil {
		t.Fatalf("quantity %q: %v", q, err)
	}
	return v
}

// runSpec is how to run a rendered container under Docker.
type runSpec struct {
	Flags []string // docker create flags: user, security, resources, env, mounts
	Args  []string // the container's args, $(VAR) expanded
}

var varRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// dockerRun translates a rendered pod and container into docker flags the
// way the kubelet runs it: pod/container securityContext (user, fsGroup,
// read-only root, no privilege escalation, capabilities), resource limits,
// env (values, resourceFieldRef, and the given values for configMapKeyRef
// and fieldRef), secret volumes (host folders from mounts, by volume name)
// and args with $(VAR) expanded.
func dockerRun(t *testing.T, pod podSpec, c container, envFrom map[string]string, mounts map[string]string) runSpec {
	t.Helper()
	var flags []string
	sc := pod.SecurityContext
	if sc.RunAsUser == nil || sc.RunAsGroup == nil {
		t.Fatal("rendered pod sets no runAsUser/runAsGroup")
	}
	flags = append(flags, "--user", fmt.Sprintf("%d:%d", *sc.RunAsUser, *sc.RunAsGroup))
	if sc.FSGroup != nil {
		flags = append(flags, "--group-add", strconv.FormatInt(*sc.FSGroup, 10))
	}
	csc := c.SecurityContext
	if csc.ReadOnlyRootFilesystem != nil && *csc.ReadOnlyRootFilesystem {
		flags = append(flags, "--read-only")
	}
	if csc.AllowPrivilegeEscalation != nil && !*csc.AllowPrivilegeEscalation {
		flags = append(flags, "--security-opt", "no-new-privileges")
	}
	for _, cap := range csc.Capabilities.Drop {
		flags = append(flags, "--cap-drop", cap)
	}
	for _, cap := range csc.Capabilities.Add {
		flags = append(flags, "--cap-add", cap)
	}
	if m, ok := c.Resources.Limits["memory"]; ok {
		flags = append(flags, "--memory", strconv.FormatInt(int64(quantity(t, m)), 10))
	}
	if cpu, ok := c.Resources.Limits["cpu"]; ok {
		flags = append(flags, "--cpus", strconv.FormatFloat(quantity(t, cpu), 'f', -1, 64))
	}
	env := map[string]string{}
	for _, e := range c.Env {
		v := e.Value
		if f := e.ValueFrom; f != nil {
			switch {
			case f.ResourceFieldRef != nil:
				res, ok := strings.CutPrefix(f.ResourceFieldRef.Resource, "limits.")
				if !ok {
					t.Fatalf("env %s: resourceFieldRef %s not translated", e.Name, f.ResourceFieldRef.Resource)
				}
				v = strconv.FormatInt(int64(quantity(t, c.Resources.Limits[res])), 10)
			case f.ConfigMapKeyRef != nil, f.FieldRef != nil:
				var ok bool
				if v, ok = envFrom[e.Name]; !ok {
					t.Fatalf("env %s comes from the cluster: the test must give its value", e.Name)
				}
			default:
				t.Fatalf("env %s: valueFrom not translated", e.Name)
			}
		}
		env[e.Name] = v
		flags = append(flags, "--env", e.Name+"="+v)
	}
	for _, vm := range c.VolumeMounts {
		dir, ok := mounts[vm.Name]
		if !ok {
			t.Fatalf("volume %s (%s): the test must give a host folder", vm.Name, vm.MountPath)
		}
		opt := "type=bind,source=" + dir + ",target=" + vm.MountPath
		if vm.ReadOnly {
			opt += ",readonly"
		}
		flags = append(flags, "--mount", opt)
	}
	args := make([]string, len(c.Args))
	for i, a := range c.Args {
		args[i] = varRef.ReplaceAllStringFunc(a, func(m string) string {
			if v, ok := env[m[2:len(m)-1]]; ok {
				return v
			}
			return m
		})
	}
	return runSpec{Flags: flags, Args: args}
}

// secretDir writes files the way the kubelet projects a secret volume with
// the pod's fsGroup: owned by root, group fsGroup, mode defaultMode.
func secretDir(t *testing.T, pod podSpec, volume string, files map[string]string) string {
	t.Helper()
	mode := os.FileMode(0o644)
	for _, v := range pod.Volumes {
		if v.Name == volume && v.Secret != nil && v.Secret.DefaultMode != nil {
			mode = os.FileMode(*v.Secret.DefaultMode)
		}
	}
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if pod.SecurityContext.FSGroup != nil {
			if err := os.Chown(p, 0, int(*pod.SecurityContext.FSGroup)); err != nil {
				// Not root: let the container's user read it anyway.
				_ = os.Chmod(p, mode|0o044)
			}
		}
	}
	return dir
}

// setArg replaces the value of --name=VALUE (all of them when several, via
// f, which gets the old value).
func setArgs(args []string, flag string, f func(old string) string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+flag+"="); ok {
			a = "--" + flag + "=" + f(v)
		}
		out[i] = a
	}
	return out
}

func argValue(t *testing.T, args []string, flag string) string {
	t.Helper()
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+flag+"="); ok {
			return v
		}
	}
	t.Fatalf("no --%s in %q", flag, args)
	return ""
}

func portOf(t *testing.T, addr string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	return port
}

// TestDockerRun loads each image's host-platform archive into the Docker
// Engine and runs it the way the rendered Deployments run it.
func TestDockerRun(t *testing.T) {
	needDocker(t)
	res := images(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	run := fmt.Sprintf("l5dt-%d-%s", os.Getpid(), randHex(t, 3)) // unique per run
	ids := map[string]string{}
	for _, im := range res.Images {
		ids[im.Name] = loadImage(ctx, t, im)
	}
	// container creates a container named run-NAME, removed at cleanup; its
	// logs are printed if the test failed.
	container := func(t *testing.T, name string, flags []string, image string, args ...string) string {
		t.Helper()
		cname := run + "-" + name
		t.Cleanup(func() {
			ctx, cancel := cleanupCtx()
			defer cancel()
			if t.Failed() {
				logs, _ := exec.CommandContext(ctx, "docker", "logs", "--tail", "50", cname).CombinedOutput()
				t.Logf("docker logs %s:\n%s", cname, logs)
			}
			_, _ = dockerErr(ctx, "rm", "--force", "--volumes", cname)
		})
		create := append([]string{"create", "--name", cname, "--label", "l5d-tunnel.test=" + run, "--pull", "never"}, flags...)
		create = append(create, image)
		docker(ctx, t, append(create, args...)...)
		return cname
	}
	// oneShot runs the image with the Deployment's settings and args and
	// returns exit code and combined output.
	oneShot := func(t *testing.T, name string, spec runSpec, image string, args ...string) (int, string) {
		t.Helper()
		cname := container(t, name, spec.Flags, image, args...)
		ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		out, _ := exec.CommandContext(ctx, "docker", "start", "--attach", cname).CombinedOutput()
		code := strings.TrimSpace(docker(ctx, t, "inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", cname))
		status, exit, _ := strings.Cut(code, " ")
		if status != "exited" {
			t.Fatalf("%s: %s after 60 s: %s", cname, status, out)
		}
		return atoi(t, exit), string(out)
	}

	serverPod, serverC := renderedDeployment(t, "tunnel-server.yaml")
	clientPod, clientC := renderedDeployment(t, "tunnel-client.yaml")
	webhookPod, webhookC := renderedDeployment(t, "install-webhook.yaml")
	token := "t0k-" + randHex(t, 16)
	serverSpec := dockerRun(t, serverPod, serverC, nil, map[string]string{
		"token": secretDir(t, serverPod, "token", map[string]string{"token": token}),
	})

	t.Run("help", func(t *testing.T) {
		hardened := serverSpec
		for i, c := range []struct {
			image string
			args  []string
			want  string
		}{
			{"tunnel", []string{"--help"}, "tunnel server [flags]"},
			{"tunnel", []string{"server", "--help"}, "--listen"},
			{"tunnel", []string{"client", "--help"}, "--upstream"},
			{"tunnel", []string{"version"}, "tunnel " + res.Version},
			{"webhook", []string{"--help"}, "cert-dir"},
			{"webhook", []string{"--version"}, "webhook " + res.Version},
			{"linkerd-tunnel", []string{"--help"}, "linkerd-tunnel"},
			{"linkerd-tunnel", []string{"version", "--client", "--short"}, res.Version},
			// The charts are in the binary: rendering needs no file.
			{"linkerd-tunnel", []string{"install"}, "kind: MutatingWebhookConfiguration"},
		} {
			code, out := oneShot(t, fmt.Sprintf("%s-%d", c.image, i), hardened, ids[c.image], c.args...)
			if code != 0 || !strings.Contains(out, c.want) {
				t.Errorf("%s %q: exit %d, output %q, want exit 0 and %q", c.image, c.args, code, out, c.want)
			} else {
				t.Logf("%s %s: exit 0, %q found", c.image, strings.Join(c.args, " "), c.want)
			}
		}
	})

	t.Run("webhook-rendered-args", func(t *testing.T) {
		// The rendered webhook needs a Kubernetes API and a serving
		// certificate; outside a cluster it must start and stop with a clear
		// error, not trip over the read-only root or the user.
		spec := dockerRun(t, webhookPod, webhookC, map[string]string{"POD_NAMESPACE": "l5d-tunnel"}, map[string]string{
			"serving-cert": secretDir(t, webhookPod, "serving-cert", map[string]string{}),
		})
		code, out := oneShot(t, "webhook", spec, ids["webhook"], spec.Args...)
		if code == 0 || !strings.Contains(out, "in-cluster configuration") {
			t.Errorf("webhook %q outside a cluster: exit %d, output %q, want a failure naming the in-cluster configuration", spec.Args, code, out)
		} else {
			t.Logf("webhook with the rendered args outside a cluster: exit %d, %s", code, strings.TrimSpace(lastLine(out)))
		}
	})

	t.Run("tunnel-end-to-end", func(t *testing.T) {
		tunnelEndToEnd(ctx, t, run, ids["tunnel"], container, serverPod, serverC, serverSpec, clientPod, clientC, token)
	})
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

func randHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", b)
}

// network creates a Docker network removed at cleanup and returns its
// gateway address (the host's address on it).
func network(ctx context.Context, t *testing.T, run, name string) (string, string) {
	t.Helper()
	nname := run + "-" + name
	t.Cleanup(func() {
		ctx, cancel := cleanupCtx()
		defer cancel()
		_, _ = dockerErr(ctx, "network", "rm", nname)
	})
	docker(ctx, t, "network", "create", "--driver", "bridge", "--label", "l5d-tunnel.test="+run, nname)
	gw := strings.TrimSpace(docker(ctx, t, "network", "inspect", "--format", "{{range .IPAM.Config}}{{.Gateway}}{{end}}", nname))
	if net.ParseIP(gw) == nil {
		t.Fatalf("network %s: gateway %q", nname, gw)
	}
	return nname, gw
}

// hostPort returns the 127.0.0.1 port Docker published for a container port.
func hostPort(ctx context.Context, t *testing.T, cname string, port int) string {
	t.Helper()
	out := strings.TrimSpace(docker(ctx, t, "port", cname, fmt.Sprintf("%d/tcp", port)))
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "127.0.0.1:") {
			return line
		}
	}
	t.Fatalf("docker port %s %d: %q", cname, port, out)
	return ""
}

// waitReady polls url until it answers 200, or fails after the bound.
func waitReady(ctx context.Context, t *testing.T, what, url string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	var last string
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				t.Logf("%s %s: 200 %s", what, url, bytes.TrimSpace(body))
				return
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, bytes.TrimSpace(body))
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s %s not ready within 60 s: %s", what, url, last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// echoUpstream is the home cluster's upstream: a TCP echo server on the host's
// address on the home network, recording who connected.
type echoUpstream struct {
	ln    net.Listener
	mu    sync.Mutex
	peers []string
	wg    sync.WaitGroup
}

func newEchoUpstream(t *testing.T, addr string) *echoUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
	if err != nil {
		t.Fatalf("upstream on the home network's gateway %s: %v", addr, err)
	}
	e := &echoUpstream{ln: ln}
	t.Cleanup(func() { ln.Close(); e.wg.Wait() })
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			e.mu.Lock()
			host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
			e.peers = append(e.peers, host)
			e.mu.Unlock()
			e.wg.Add(1)
			go func() {
				defer e.wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(60 * time.Second))
				_, _ = io.Copy(c, c)
				_ = c.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
	return e
}

func (e *echoUpstream) Peers() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.peers...)
}

// tunnelEndToEnd runs the rendered tunnel server in a "cloud" network and the
// rendered tunnel client in a "home" network. The client reaches the server
// the way a home cluster reaches the cloud's ingress: by a name that resolves
// to the server, which is also attached to the home network; nothing on the
// cloud side can reach into the home network but through the tunnel. The
// upstream is an echo server of this test on the host's address in the home
// network; the caller is this test, through the server's published ports.
func tunnelEndToEnd(ctx context.Context, t *testing.T, run, image string,
	container func(*testing.T, string, []string, string, ...string) string,
	serverPod podSpec, serverC container, serverSpec runSpec,
	clientPod podSpec, clientC container, token string,
) {
	cloud, _ := network(ctx, t, run, "cloud")
	home, homeGW := network(ctx, t, run, "home")
	upstream := newEchoUpstream(t, homeGW)
	upstreamAddr := upstream.ln.Addr().String()

	// Server: the rendered args, every container port published on loopback.
	flags := append([]string{"--network", cloud}, serverSpec.Flags...)
	for _, p := range serverC.Ports {
		flags = append(flags, "--publish", fmt.Sprintf("127.0.0.1::%d", p.ContainerPort))
	}
	server := container(t, "server", flags, image, serverSpec.Args...)
	const serverName = "tunnel.cloud.example"
	docker(ctx, t, "network", "connect", "--alias", serverName, home, server)
	docker(ctx, t, "start", server)

	// Client: the rendered args with the server URL (rendered from the
	// chart's serverURL) pointing at the server's websocket listener, and
	// every upstream at the test's echo server.
	listen := argValue(t, serverSpec.Args, "listen")
	serverURL := fmt.Sprintf("ws://%s:%s/tunnel", serverName, portOf(t, listen))
	clientSpec := dockerRun(t, clientPod, clientC, nil, map[string]string{
		"token": secretDir(t, clientPod, "token", map[string]string{"token": token}),
	})
	clientSpec.Args = setArgs(clientSpec.Args, "server", func(string) string { return serverURL })
	clientSpec.Args = setArgs(clientSpec.Args, "upstream", func(old string) string {
		name, _, _ := strings.Cut(old, "=")
		return name + "=" + upstreamAddr
	})
	flags = append([]string{"--network", home}, clientSpec.Flags...)
	for _, p := range clientC.Ports {
		flags = append(flags, "--publish", fmt.Sprintf("127.0.0.1::%d", p.ContainerPort))
	}
	client := container(t, "client", flags, image, clientSpec.Args...)
	docker(ctx, t, "start", client)
	t.Logf("server: docker %s %q", strings.Join(serverSpec.Flags, " "), serverSpec.Args)
	t.Logf("client: docker %s %q", strings.Join(clientSpec.Flags, " "), clientSpec.Args)

	serverAdmin := hostPort(ctx, t, server, atoi(t, portOf(t, argValue(t, serverSpec.Args, "admin-addr"))))
	clientAdmin := hostPort(ctx, t, client, atoi(t, portOf(t, argValue(t, clientSpec.Args, "admin-addr"))))
	waitReady(ctx, t, "server", "http://"+serverAdmin+"/readyz")
	waitReady(ctx, t, "client", "http://"+clientAdmin+"/readyz")

	clientIP := strings.TrimSpace(docker(ctx, t, "inspect", "--format",
		fmt.Sprintf(`{{(index .NetworkSettings.Networks %q).IPAddress}}`, home), client))

	// A stream through each listener of the server: the caller (cloud side)
	// sends, the upstream (home side) echoes, the caller reads it all back.
	payload := make([]byte, 256<<10)
	if _, err := rand.Read(payload); err != nil {
		t.Fatal(err)
	}
	for _, a := range serverSpec.Args {
		v, ok := strings.CutPrefix(a, "--port=")
		if !ok {
			continue
		}
		name, addr, _ := strings.Cut(v, "=")
		caller := hostPort(ctx, t, server, atoi(t, portOf(t, addr)))
		start := time.Now()
		got := echoThrough(t, caller, payload)
		if !bytes.Equal(got, payload) {
			t.Errorf("listener %s (%s): %d bytes back of %d sent, or different bytes", name, caller, len(got), len(payload))
			continue
		}
		t.Logf("listener %s: %d KiB echoed end to end through server and client containers in %v",
			name, len(payload)>>10, time.Since(start).Round(time.Millisecond))
	}
	peers := upstream.Peers()
	if len(peers) == 0 {
		t.Fatal("the upstream saw no connection")
	}
	for _, p := range peers {
		if p != clientIP {
			t.Errorf("upstream connection from %s, want only the client container (%s on %s)", p, clientIP, home)
		}
	}
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// echoThrough sends payload to addr, half-closes, and returns what came back.
func echoThrough(t *testing.T, addr string, payload []byte) []byte {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(payload)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		errc <- err
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Errorf("read from %s: %v", addr, err)
	}
	if err := <-errc; err != nil {
		t.Errorf("write to %s: %v", addr, err)
	}
	return got
}
