package cli

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
)

// Exit codes of every binary.
const (
	ExitOK      = 0
	ExitFailure = 1 // a runtime error (e.g. address in use)
	ExitUsage   = 2 // bad flags or configuration; the message names the flag
)

// Version is stamped at build time with
// -ldflags "-X github.com/l5d-tunnel/l5d-tunnel/internal/cli.Version=...".
var Version = "dev"

// VersionVar is the -X target that stamps Version.
const VersionVar = "github.com/l5d-tunnel/l5d-tunnel/internal/cli.Version"

// ParseLevel maps a --log-level value to a slog level: debug, info (or
// empty), warn (or warning) or error, in any case.
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug, nil
	case "info", "":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("--log-level %q: want debug, info, warn or error", s)
}

// CheckLogFormat accepts the --log-format values: json (or empty) and text.
func CheckLogFormat(format string) error {
	switch format {
	case "json", "", "text":
		return nil
	}
	return fmt.Errorf("--log-format %q: want json or text", format)
}

// NewLogger builds the process logger from --log-format and --log-level,
// writing to w. Its errors name the flag.
func NewLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	lvl, err := ParseLevel(level)
	if err != nil {
		return nil, err
	}
	if err := CheckLogFormat(format); err != nil {
		return nil, err
	}
	ho := &slog.HandlerOptions{Level: lvl}
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, ho)), nil
	}
	return slog.New(slog.NewJSONHandler(w, ho)), nil
}

// CheckPort reports a port number outside lo-65535.
func CheckPort(p, lo int) error {
	if p < lo || p > 65535 {
		return fmt.Errorf("%d is not a TCP port (%d-65535)", p, lo)
	}
	return nil
}

// SplitHostPort splits a HOST:PORT address and checks that PORT is a
// number in 0-65535 (0: any free port).
func SplitHostPort(addr string) (host string, port int, err error) {
	host, ps, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	p, err := strconv.Atoi(ps)
	if err != nil || CheckPort(p, 0) != nil {
		return "", 0, fmt.Errorf("bad port %q", ps)
	}
	return host, p, nil
}
