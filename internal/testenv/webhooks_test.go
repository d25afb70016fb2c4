package testenv

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestLocalWebhooksKeepsPaths: every service clientConfig of the shipped
// configuration becomes a URL on the local serving address with its path
// unchanged.
func TestLocalWebhooksKeepsPaths(t *testing.T) {
	cfg, err := WebhookConfiguration()
	if err != nil {
		t.Fatal(err)
	}
	o, err := LocalWebhooks(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if o.LocalServingPort == 0 || o.LocalServingHost != "127.0.0.1" {
		t.Fatalf("serving address %s:%d", o.LocalServingHost, o.LocalServingPort)
	}
	n := 0
	for _, mwc := range o.MutatingWebhooks {
		for _, w := range mwc.Webhooks {
			n++
			if w.ClientConfig.Service != nil || w.ClientConfig.URL == nil {
				t.Fatalf("%s: clientConfig not rewritten", w.Name)
			}
			u := *w.ClientConfig.URL
			if !strings.HasPrefix(u, "https://127.0.0.1:") || strings.Contains(strings.TrimPrefix(u, "https://"), "//") {
				t.Errorf("%s: URL %q", w.Name, u)
			}
		}
	}
	if n != 3 {
		t.Errorf("%d webhooks, want 3", n)
	}
}

// TestDoubleSlashIsRedirected documents why LocalWebhooks exists: envtest's
// own rewrite yields "https://host:port//mutate-v1-service", and the
// ServeMux behind controller-runtime's webhook server answers that with a
// 307 redirect (which the API server follows: one extra round trip per
// admission) instead of calling the handler.
func TestDoubleSlashIsRedirected(t *testing.T) {
	mux := http.NewServeMux()
	called := false
	mux.HandleFunc("/mutate-v1-service", func(http.ResponseWriter, *http.Request) { called = true })
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "//mutate-v1-service", strings.NewReader("{}")))
	if called || rec.Code != http.StatusTemporaryRedirect || rec.Header().Get("Location") != "/mutate-v1-service" {
		t.Fatalf("POST //mutate-v1-service: code %d, handler called %v", rec.Code, called)
	}
}
