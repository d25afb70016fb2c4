package harness

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Proc is a process started inside a network namespace with `ip netns exec`
// (which execs in place, so the pid is the program's own). Its output goes to
// a log file.
type Proc struct {
	Name    string
	Log     string
	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error
}

// StartProc starts bin with args in ns (ns nil: the host namespace). The
// process gets its own process group and dies with the harness (Pdeathsig).
func StartProc(ns *Netns, logDir, name, bin string, args []string, env []string) (*Proc, error) {
	var cmd *exec.Cmd
	if ns != nil {
		cmd = exec.Command("ip", append([]string{"netns", "exec", ns.Name, bin}, args...)...)
	} else {
		cmd = exec.Command(bin, args...)
	}
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	logPath := filepath.Join(logDir, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(f, "### %s %s %s\n", time.Now().UTC().Format(time.RFC3339Nano), bin, strings.Join(redactArgs(args), " "))
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Proc{Name: name, Log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

func redactArgs(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		if strings.Contains(strings.ToLower(a), "token=") && !strings.Contains(a, "token-file") {
			a = a[:strings.Index(a, "=")+1] + "REDACTED"
		}
		out[i] = a
	}
	return out
}

// Pid is the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Err describes how the process ended, with the tail of its log.
func (p *Proc) Err() error {
	if !p.Exited() {
		return nil
	}
	err := p.waitErr
	if err == nil {
		err = errors.New("exit status 0")
	}
	return fmt.Errorf("%s exited: %w\n%s", p.Name, err, p.Tail(30))
}

// Tail returns the last n lines of the process log.
func (p *Proc) Tail(n int) string {
	b, _ := os.ReadFile(p.Log)
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// Signal sends sig to the process.
func (p *Proc) Signal(sig syscall.Signal) error {
	if p.Exited() {
		return errors.New(p.Name + " already exited")
	}
	return syscall.Kill(p.Pid(), sig)
}

// Stop ends the process: SIGTERM (after SIGCONT, in case it is stopped), then
// SIGKILL after grace. It is safe to call more than once.
func (p *Proc) Stop(grace time.Duration) {
	if p.Exited() {
		return
	}
	_ = syscall.Kill(p.Pid(), syscall.SIGCONT)
	_ = syscall.Kill(p.Pid(), syscall.SIGTERM)
	select {
	case <-p.done:
		return
	case <-time.After(grace):
	}
	_ = syscall.Kill(-p.Pid(), syscall.SIGKILL)
	_ = syscall.Kill(p.Pid(), syscall.SIGKILL)
	<-p.done
}

// Kill ends the process with SIGKILL and waits for it.
func (p *Proc) Kill() {
	if p.Exited() {
		return
	}
	_ = syscall.Kill(p.Pid(), syscall.SIGKILL)
	<-p.done
}
