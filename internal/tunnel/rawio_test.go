package tunnel

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"testing"
	"time"
)

// tcpPair returns both ends of a loopback TCP connection, the dialed end
// wrapped by fastConn.
func tcpPair(t *testing.T) (fast net.Conn, peer *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	acc := make(chan net.Conn, 1)
	go func() { c, _ := ln.Accept(); acc <- c }()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	p := <-acc
	if p == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { c.Close(); p.Close() })
	fc := fastConn(c)
	if got := fmt.Sprintf("%T", fc); runtime.GOOS == "linux" && got != "*tunnel.rawTCPConn" {
		t.Fatalf("fastConn returned %s, want the raw-syscall conn", got)
	}
	return fc, p.(*net.TCPConn)
}

// TestFastConn: the raw-syscall TCP conn behaves like net.TCPConn for
// everything the pipe and the websocket rely on.
func TestFastConn(t *testing.T) {
	tests := map[string]func(t *testing.T, c net.Conn, peer *net.TCPConn){
		"bulk both ways with a slow reader": func(t *testing.T, c net.Conn, peer *net.TCPConn) {
			// 8 MiB is far more than the socket buffers: the writer must
			// wait for writability (EAGAIN) and resume with partial writes.
			data := make([]byte, 8<<20)
			_, _ = rand.Read(data)
			errc := make(chan error, 1)
			go func() {
				n, err := c.Write(data)
				if err == nil && n != len(data) {
					err = io.ErrShortWrite
				}
				errc <- err
			}()
			time.Sleep(50 * time.Millisecond)
			got := make([]byte, len(data))
			if _, err := io.ReadFull(peer, got); err != nil {
				t.Fatal(err)
			}
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, data) {
				t.Fatal("data corrupted")
			}
			go func() { _, _ = peer.Write(data); _ = peer.CloseWrite() }()
			back, err := io.ReadAll(c)
			if err != nil || !bytes.Equal(back, data) {
				t.Fatalf("read back %d bytes, err %v", len(back), err)
			}
		},
		"EOF and half-close": func(t *testing.T, c net.Conn, peer *net.TCPConn) {
			_ = peer.CloseWrite()
			// io.Reader's contract: io.EOF itself, never wrapped.
			if n, err := c.Read(make([]byte, 10)); n != 0 || err != io.EOF { //nolint:errorlint // see above
				t.Fatalf("Read = %d, %v; want 0, EOF", n, err)
			}
			if _, err := c.Write([]byte("still open")); err != nil {
				t.Fatal(err)
			}
			if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(peer)
			if err != nil || string(got) != "still open" {
				t.Fatalf("peer got %q, %v", got, err)
			}
		},
		"read deadline is a timeout": func(t *testing.T, c net.Conn, _ *net.TCPConn) {
			_ = c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
			_, err := c.Read(make([]byte, 10))
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("Read = %v, want a timeout", err)
			}
		},
		"close unblocks a reader": func(t *testing.T, c net.Conn, _ *net.TCPConn) {
			errc := make(chan error, 1)
			go func() { _, err := c.Read(make([]byte, 10)); errc <- err }()
			time.Sleep(20 * time.Millisecond)
			_ = c.Close()
			select {
			case err := <-errc:
				if !errors.Is(err, net.ErrClosed) {
					t.Fatalf("Read after Close = %v, want net.ErrClosed", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Close did not unblock Read")
			}
		},
		"reset is an error": func(t *testing.T, c net.Conn, peer *net.TCPConn) {
			_ = peer.SetLinger(0)
			_ = peer.Close()
			time.Sleep(20 * time.Millisecond)
			if _, err := c.Read(make([]byte, 10)); err == nil || errors.Is(err, io.EOF) {
				t.Fatalf("Read after peer reset = %v, want an error", err)
			}
		},
		"empty read and write": func(t *testing.T, c net.Conn, _ *net.TCPConn) {
			if n, err := c.Read(nil); n != 0 || err != nil {
				t.Fatalf("Read(nil) = %d, %v", n, err)
			}
			if n, err := c.Write(nil); n != 0 || err != nil {
				t.Fatalf("Write(nil) = %d, %v", n, err)
			}
		},
	}
	for name, f := range tests {
		t.Run(name, func(t *testing.T) {
			c, peer := tcpPair(t)
			f(t, c, peer)
		})
	}
}
