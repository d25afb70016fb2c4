package harness

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// A rendered Deployment run as a process: no kubelet and no container
// runtime run here, so the harness does what the kubelet would do for the
// one container of one replica, as far as the binary can tell, and runs the
// binary that the image holds. What is tested is then what ships: the
// rendered args, the environment (literal values, the downward API,
// $(VAR) expansion) and the mounted Secrets and ConfigMaps.
//
// Two things a pod has and a process does not are stood in for, each in
// one place:
//   - the pod's own network namespace: a listen address ":PORT" binds the
//     pod's IP (PodProcess.PodIP), so two "pods" share a network namespace
//     without clashing;
//   - files mounted from volumes: each mount path is a folder under Dir,
//     and an argument naming a path under a mount path names the same file
//     in that folder.
//
// Anything else a pod would get from its environment (in-cluster API
// credentials, an ingress in front of it) is passed as ExtraArgs or
// Override by the caller, where the e2e says why.

// PodProcess describes one replica of a rendered Deployment.
type PodProcess struct {
	Deployment *appsv1.Deployment
	// PodName and PodIP are what the downward API reports.
	PodName, PodIP string
	// Dir holds the mounted volumes (Dir/volumes/<volume>/...).
	Dir string
	// Volume returns the files of a Secret or ConfigMap volume, by key
	// (the harness reads them from the API server).
	Volume func(v corev1.Volume) (map[string][]byte, error)
	// Override replaces the value of a flag (--name=value) the rendered
	// args set; a flag the args do not set is an error.
	Override map[string]string
	// ExtraArgs are appended to the rendered args.
	ExtraArgs []string
}

// listenOnly matches an argument value that is a port with no host.
var listenOnly = regexp.MustCompile(`^(.*=)?:([0-9]+)$`)

// Command is the process's argv (without the binary) and environment.
func (p PodProcess) Command() (args, env []string, err error) {
	if p.Deployment == nil || len(p.Deployment.Spec.Template.Spec.Containers) != 1 {
		return nil, nil, fmt.Errorf("pod process: want a Deployment with one container")
	}
	spec := p.Deployment.Spec.Template.Spec
	c := spec.Containers[0]
	if len(c.Command) > 0 {
		return nil, nil, fmt.Errorf("deployment %s: container command %q is set; the image's entrypoint is the binary", p.Deployment.Name, c.Command)
	}
	mounts, err := p.mount(spec.Volumes, c.VolumeMounts)
	if err != nil {
		return nil, nil, err
	}
	vars := map[string]string{}
	for _, e := range c.Env {
		v, err := p.envValue(c, e)
		if err != nil {
			return nil, nil, fmt.Errorf("deployment %s: env %s: %w", p.Deployment.Name, e.Name, err)
		}
		vars[e.Name] = v
		env = append(env, e.Name+"="+v)
	}
	seen := map[string]bool{}
	for _, a := range c.Args {
		a = expand(a, vars)
		if name, _, ok := strings.Cut(strings.TrimPrefix(a, "--"), "="); ok && strings.HasPrefix(a, "--") {
			if v, over := p.Override[name]; over {
				a, seen[name] = "--"+name+"="+v, true
			}
		}
		if m := listenOnly.FindStringSubmatch(a); m != nil {
			a = m[1] + p.PodIP + ":" + m[2]
		}
		for mountPath, dir := range mounts {
			a = replacePathPrefix(a, mountPath, dir)
		}
		args = append(args, a)
	}
	for name := range p.Override {
		if !seen[name] {
			return nil, nil, fmt.Errorf("deployment %s: override of --%s, which the rendered args do not set", p.Deployment.Name, name)
		}
	}
	return append(args, p.ExtraArgs...), env, nil
}

// mount writes each mounted volume's files under Dir and returns mount path
// -> folder.
func (p PodProcess) mount(volumes []corev1.Volume, mounts []corev1.VolumeMount) (map[string]string, error) {
	byName := map[string]corev1.Volume{}
	for _, v := range volumes {
		byName[v.Name] = v
	}
	out := map[string]string{}
	for _, m := range mounts {
		v, ok := byName[m.Name]
		if !ok {
			return nil, fmt.Errorf("deployment %s: volumeMount %s names no volume", p.Deployment.Name, m.Name)
		}
		dir := filepath.Join(p.Dir, "volumes", m.Name)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		out[m.MountPath] = dir
		if v.Secret == nil && v.ConfigMap == nil {
			continue // emptyDir and the like: an empty folder
		}
		files, err := p.Volume(v)
		if err != nil {
			return nil, fmt.Errorf("deployment %s: volume %s: %w", p.Deployment.Name, v.Name, err)
		}
		var items []corev1.KeyToPath
		if v.Secret != nil {
			items = v.Secret.Items
		} else {
			items = v.ConfigMap.Items
		}
		for key, data := range files {
			name := key
			if len(items) > 0 {
				name = ""
				for _, it := range items {
					if it.Key == key {
						name = it.Path
					}
				}
				if name == "" {
					continue
				}
			}
			if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

func (p PodProcess) envValue(c corev1.Container, e corev1.EnvVar) (string, error) {
	if e.ValueFrom == nil {
		return e.Value, nil
	}
	switch f := e.ValueFrom; {
	case f.FieldRef != nil:
		switch f.FieldRef.FieldPath {
		case "metadata.namespace":
			return p.Deployment.Namespace, nil
		case "metadata.name":
			return p.PodName, nil
		case "status.podIP":
			return p.PodIP, nil
		}
		return "", fmt.Errorf("fieldRef %s is not stood in for", f.FieldRef.FieldPath)
	case f.ResourceFieldRef != nil:
		q, ok := c.Resources.Limits[corev1.ResourceName(strings.TrimPrefix(f.ResourceFieldRef.Resource, "limits."))]
		if !ok || !strings.HasPrefix(f.ResourceFieldRef.Resource, "limits.") {
			return "", fmt.Errorf("resourceFieldRef %s: no such limit", f.ResourceFieldRef.Resource)
		}
		return strconv.FormatInt(q.Value(), 10), nil
	}
	return "", fmt.Errorf("valueFrom kind is not stood in for")
}

// expand does Kubernetes' $(VAR) expansion of container args: a defined
// variable is replaced, $$ is a literal $, anything else stays as written.
func expand(s string, vars map[string]string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
			continue
		case '(':
			if end := strings.IndexByte(s[i+2:], ')'); end >= 0 {
				if v, ok := vars[s[i+2:i+2+end]]; ok {
					b.WriteString(v)
					i += 2 + end
					continue
				}
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// replacePathPrefix rewrites a path under mountPath, as a whole argument or
// as a flag value, to the same path under dir.
func replacePathPrefix(arg, mountPath, dir string) string {
	prefix, val := "", arg
	if i := strings.IndexByte(arg, '='); i >= 0 {
		prefix, val = arg[:i+1], arg[i+1:]
	}
	if val == mountPath || strings.HasPrefix(val, strings.TrimSuffix(mountPath, "/")+"/") {
		return prefix + dir + strings.TrimPrefix(val, strings.TrimSuffix(mountPath, "/"))
	}
	return arg
}

// ReadinessURL is the URL of the container's HTTP readiness probe at the
// pod's IP ("" when it has none).
func (p PodProcess) ReadinessURL() string {
	c := p.Deployment.Spec.Template.Spec.Containers[0]
	if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil {
		return ""
	}
	g := c.ReadinessProbe.HTTPGet
	port := g.Port.IntValue()
	if port == 0 {
		for _, cp := range c.Ports {
			if cp.Name == g.Port.StrVal {
				port = int(cp.ContainerPort)
			}
		}
	}
	return fmt.Sprintf("http://%s:%d%s", p.PodIP, port, g.Path)
}
