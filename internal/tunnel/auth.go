package tunnel

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net/http"
	"os"
	"strings"
)

// tokens reads the configured tokens: every non-empty line of the token file
// (re-read each call so a rotated Secret is picked up), or the TUNNEL_TOKEN
// value. The token itself never appears in errors or logs.
func (c Common) tokens() ([]string, error) {
	if c.TokenFile == "" {
		if t := strings.TrimSpace(c.Token); t != "" {
			return []string{t}, nil
		}
		return nil, ErrNoToken
	}
	b, err := os.ReadFile(c.TokenFile)
	if err != nil {
		return nil, fmt.Errorf("read token file: %w", err)
	}
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if t := strings.TrimSpace(sc.Text()); t != "" {
			out = append(out, t)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("token file %s: %w", c.TokenFile, ErrNoToken)
	}
	return out, nil
}

// clientToken is the token the client presents: the first one.
func (c Common) clientToken() (string, error) {
	ts, err := c.tokens()
	if err != nil {
		return "", err
	}
	return ts[0], nil
}

// authResult explains a rejected request without revealing the token.
type authResult int

const (
	authOK authResult = iota
	authMissing
	authWrong
	authNoServerToken
)

func (r authResult) String() string {
	return [...]string{"ok", "missing bearer token", "wrong token", "server has no token"}[r]
}

// checkAuth compares the request's bearer token with every accepted token in
// constant time. Both sides are hashed first so neither the length nor the
// content of a token leaks through timing.
func checkAuth(r *http.Request, accepted []string) authResult {
	if len(accepted) == 0 {
		return authNoServerToken
	}
	h := r.Header.Get("Authorization")
	const prefix = "Bearer "
	if len(h) <= len(prefix) || !strings.EqualFold(h[:len(prefix)], prefix) {
		return authMissing
	}
	got := sha256.Sum256([]byte(strings.TrimSpace(h[len(prefix):])))
	match := 0
	for _, t := range accepted {
		want := sha256.Sum256([]byte(t))
		match |= subtle.ConstantTimeCompare(got[:], want[:])
	}
	if match == 1 {
		return authOK
	}
	return authWrong
}
