package tunnel

import (
	"net"
	"testing"
	"time"

	"github.com/l5d-tunnel/l5d-tunnel/internal/testpki"
	"github.com/l5d-tunnel/l5d-tunnel/internal/testsupport"
)

// serverCert writes a CA certificate and a server certificate for
// 127.0.0.1 that it signed (with its key) into dir.
func serverCert(t *testing.T, dir, name string) (caFile, certFile, keyFile string) {
	t.Helper()
	ca, err := testpki.NewCA(name + "-ca")
	if err != nil {
		t.Fatal(err)
	}
	kp, err := ca.Issue(testpki.CertSpec{CommonName: "127.0.0.1", IPs: []net.IP{net.ParseIP("127.0.0.1")}, Server: true})
	if err != nil {
		t.Fatal(err)
	}
	if certFile, keyFile, err = kp.Write(dir, name); err != nil {
		t.Fatal(err)
	}
	return writeFile(t, dir, name+"-ca.crt", string(ca.CertPEM)), certFile, keyFile
}

// TestTLS: wss:// with --tls-cert/--tls-key on the server and --ca-file on
// the client; a client that does not trust the certificate never connects.
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	ca, cert, key := serverCert(t, dir, "server")
	other, _, _ := serverCert(t, dir, "other")
	cfg := serverConfig("gw")
	cfg.TLSCert, cfg.TLSKey = cert, key
	s := startServer(t, cfg)

	bad := clientConfig(s, map[string]string{"gw": testsupport.Serve(t, echo)})
	bad.ServerURL = "wss://" + s.Addr() + TunnelPath
	bad.CAFile = other
	cb, _ := startClient(t, bad)
	waitFor(t, "untrusted certificate rejected", 10*time.Second, func() bool {
		return metric(t, cb.m, "l5d_tunnel_connect_errors_total", "reason", "dial") >= 2
	})
	if cb.Ready() || s.Ready() {
		t.Fatal("session up with an untrusted server certificate")
	}

	good := bad
	good.CAFile = ca
	c, _ := startClient(t, good)
	waitFor(t, "wss session", 10*time.Second, c.Ready)
	if got, err := roundTrip(t, s.ListenerAddr("gw"), "over tls"); err != nil || got != "over tls" {
		t.Fatalf("round trip = %q, %v", got, err)
	}

	// Plain ws:// against a TLS endpoint fails too.
	plain := bad
	plain.ServerURL = "ws://" + s.Addr() + TunnelPath
	plain.CAFile = ""
	cp, _ := startClient(t, plain)
	waitFor(t, "plain ws rejected", 10*time.Second, func() bool {
		return metric(t, cp.m, "l5d_tunnel_connect_errors_total", "reason", "dial")+
			metric(t, cp.m, "l5d_tunnel_connect_errors_total", "reason", "handshake") >= 2
	})
}

func TestServerTLSConfigErrors(t *testing.T) {
	cfg := serverConfig("gw")
	cfg.TLSCert, cfg.TLSKey = "/nonexistent.crt", "/nonexistent.key"
	s, err := NewServer(cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err == nil {
		s.Shutdown(0)
		t.Fatal("Start succeeded with missing certificate files")
	}
}
