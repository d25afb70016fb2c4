package tunnel

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"testing"
	"time"
)

// selfSigned writes a self-signed certificate for 127.0.0.1 (usable as its
// own CA) and its key into dir.
func selfSigned(t *testing.T, dir, name string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile = writeFile(t, dir, name+".crt", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	keyFile = writeFile(t, dir, name+".key", string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})))
	return certFile, keyFile
}

// TestTLS: wss:// with --tls-cert/--tls-key on the server and --ca-file on
// the client; a client that does not trust the certificate never connects.
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	cert, key := selfSigned(t, dir, "server")
	other, _ := selfSigned(t, dir, "other")
	cfg := serverConfig("gw")
	cfg.TLSCert, cfg.TLSKey = cert, key
	s := startServer(t, cfg)

	bad := clientConfig(s, map[string]string{"gw": upstream(t, echo)})
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
	good.CAFile = cert
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
