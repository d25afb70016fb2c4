package harness

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// NamePrefix starts the name of every network namespace the harness creates:
// <NamePrefix><pid>-<role>. Sweep deletes those whose pid is gone.
const NamePrefix = "l5dt-"

// Netns is a network namespace created with `ip netns add`.
type Netns struct {
	Name string
}

var (
	// ErrNotRoot is returned when the harness cannot create network namespaces.
	ErrNotRoot = errors.New("network namespaces need root (CAP_SYS_ADMIN and CAP_NET_ADMIN)")
	// ErrBadConfig is returned by Config.Validate.
	ErrBadConfig = errors.New("invalid e2e topology configuration")
)

// CheckPrivileges reports why network namespaces cannot be used here, or nil.
func CheckPrivileges() error {
	if os.Geteuid() != 0 {
		return ErrNotRoot
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return fmt.Errorf("the ip command (iproute2) is missing: %w", err)
	}
	return nil
}

func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// NewNetns creates a namespace named <NamePrefix><pid>-<role> with loopback up.
func NewNetns(role string) (*Netns, error) {
	n := &Netns{Name: fmt.Sprintf("%s%d-%s", NamePrefix, os.Getpid(), role)}
	if err := ip("netns", "add", n.Name); err != nil {
		return nil, err
	}
	if err := ip("-n", n.Name, "link", "set", "lo", "up"); err != nil {
		_ = n.Delete()
		return nil, err
	}
	return n, nil
}

// IP runs `ip -n <ns> args...`.
func (n *Netns) IP(args ...string) error { return ip(append([]string{"-n", n.Name}, args...)...) }

// AddAddrs gives the namespace extra host addresses (CIDR notation) that
// only exist inside it: on a dummy interface when the kernel has the dummy
// driver, else on loopback. Either way no other namespace has a route to them.
func (n *Netns) AddAddrs(dev string, addrs ...string) error {
	if err := n.IP("link", "add", dev, "type", "dummy"); err != nil {
		dev = "lo"
	} else if err := n.IP("link", "set", dev, "up"); err != nil {
		return err
	}
	for _, a := range addrs {
		if err := n.IP("addr", "add", a, "dev", dev); err != nil {
			return err
		}
	}
	return nil
}

// WriteHosts writes /etc/netns/<name>/hosts, which `ip netns exec` mounts on
// /etc/hosts: the stand-in for cluster DNS.
func (n *Netns) WriteHosts(lines []string) error {
	dir := filepath.Join("/etc/netns", n.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	body := "127.0.0.1 localhost\n" + strings.Join(lines, "\n") + "\n"
	tmp := filepath.Join(dir, ".hosts.tmp")
	if err := os.WriteFile(tmp, []byte(body), 0o644); err != nil {
		return err
	}
	// ip netns exec bind-mounts the file when a process starts: processes
	// started after the rename see the new entries, running ones the old.
	return os.Rename(tmp, filepath.Join(dir, "hosts"))
}

// Delete kills whatever still runs in the namespace and removes it and its
// /etc/netns folder.
func (n *Netns) Delete() error {
	killNetnsPids(n.Name)
	_ = os.RemoveAll(filepath.Join("/etc/netns", n.Name))
	if _, err := os.Stat(filepath.Join("/var/run/netns", n.Name)); os.IsNotExist(err) {
		return nil
	}
	return ip("netns", "del", n.Name)
}

// killNetnsPids SIGKILLs the processes `ip netns pids` lists for a namespace:
// only processes this harness started live there.
func killNetnsPids(name string) {
	out, err := exec.Command("ip", "netns", "pids", name).Output()
	if err != nil {
		return
	}
	for _, f := range strings.Fields(string(out)) {
		pid, err := strconv.Atoi(f)
		if err != nil || pid <= 1 || pid == os.Getpid() {
			continue
		}
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// Sweep deletes namespaces (and /etc/netns folders) left behind by earlier
// runs of this harness whose process is gone. Namespaces of live runs stay.
func Sweep() []string {
	var swept []string
	seen := map[string]bool{}
	for _, dir := range []string{"/var/run/netns", "/etc/netns"} {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			name := e.Name()
			if !strings.HasPrefix(name, NamePrefix) || seen[name] {
				continue
			}
			rest := strings.TrimPrefix(name, NamePrefix)
			pidStr, _, ok := strings.Cut(rest, "-")
			pid, err := strconv.Atoi(pidStr)
			if !ok || err != nil {
				continue
			}
			if pid == os.Getpid() || syscall.Kill(pid, 0) == nil {
				continue // a live run (maybe this one) owns it
			}
			seen[name] = true
			_ = (&Netns{Name: name}).Delete()
			swept = append(swept, name)
		}
	}
	return swept
}

// Veth joins two namespaces with a veth pair; a gets addrA, b gets addrB
// (CIDR). It returns the device names in a and b.
func Veth(a, b *Netns, addrA, addrB string) (devA, devB string, err error) {
	id := os.Getpid() % 1000000
	devA, devB = fmt.Sprintf("l5a%d", id), fmt.Sprintf("l5b%d", id)
	if err := ip("link", "add", devA, "netns", a.Name, "type", "veth", "peer", "name", devB, "netns", b.Name); err != nil {
		return "", "", err
	}
	for _, s := range []struct {
		n         *Netns
		dev, addr string
	}{{a, devA, addrA}, {b, devB, addrB}} {
		if err := s.n.IP("addr", "add", s.addr, "dev", s.dev); err != nil {
			return "", "", err
		}
		if err := s.n.IP("link", "set", s.dev, "up"); err != nil {
			return "", "", err
		}
	}
	return devA, devB, nil
}

// Do runs fn on an OS thread that has joined the namespace, so sockets fn
// creates belong to it. The thread returns to the original namespace after;
// if it cannot, the thread is discarded.
func (n *Netns) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		target, err := os.Open(filepath.Join("/var/run/netns", n.Name))
		if err != nil {
			errc <- fmt.Errorf("open netns %s: %w", n.Name, err)
			runtime.UnlockOSThread()
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", n.Name, err)
			runtime.UnlockOSThread()
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			// leave the thread locked: the runtime discards it when we return
			errc <- ferr
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// DialContext dials addr (a literal IP and port: name resolution would use the
// host's files) from inside the namespace.
func (n *Netns) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func() error {
		var err error
		d := net.Dialer{Timeout: 10 * time.Second}
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// Listen opens a listener inside the namespace.
func (n *Netns) Listen(network, addr string) (net.Listener, error) {
	var l net.Listener
	err := n.Do(func() error {
		var err error
		l, err = net.Listen(network, addr)
		return err
	})
	return l, err
}
