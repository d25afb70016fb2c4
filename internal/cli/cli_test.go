package cli

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

func TestParseLevel(t *testing.T) {
	for in, want := range map[string]slog.Level{
		"debug": slog.LevelDebug, "INFO": slog.LevelInfo, "": slog.LevelInfo,
		"warn": slog.LevelWarn, "warning": slog.LevelWarn, "Error": slog.LevelError,
	} {
		got, err := ParseLevel(in)
		if err != nil || got != want {
			t.Errorf("ParseLevel(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := ParseLevel("loud"); err == nil || !strings.Contains(err.Error(), "--log-level") {
		t.Errorf("ParseLevel(loud) = %v; want an error naming --log-level", err)
	}
}

func TestNewLogger(t *testing.T) {
	var b bytes.Buffer
	log, err := NewLogger(&b, "text", "warn")
	if err != nil {
		t.Fatal(err)
	}
	log.Info("hidden")
	log.Warn("shown")
	if s := b.String(); strings.Contains(s, "hidden") || !strings.Contains(s, "msg=shown") {
		t.Errorf("text logger at warn wrote %q", s)
	}
	if _, err := NewLogger(&b, "xml", "info"); err == nil || !strings.Contains(err.Error(), "--log-format") {
		t.Errorf("NewLogger(xml) = %v; want an error naming --log-format", err)
	}
}

func TestSplitHostPort(t *testing.T) {
	for addr, ok := range map[string]bool{
		":0": true, "127.0.0.1:65535": true, "h:443": true,
		"h:65536": false, "h:-1": false, "h:http": false, "nohost": false,
	} {
		if _, _, err := SplitHostPort(addr); (err == nil) != ok {
			t.Errorf("SplitHostPort(%q) error = %v; want ok=%v", addr, err, ok)
		}
	}
}
