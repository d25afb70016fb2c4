package smux

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestHeaderRoundTrip(t *testing.T) {
	for _, name := range []string{"api", "gateway", "probe", "a", strings.Repeat("x", MaxListenerNameLen), "my_port.v2-1"} {
		t.Run(name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := WriteHeader(&buf, Header{Listener: name}); err != nil {
				t.Fatal(err)
			}
			buf.WriteString("payload")
			h, err := ReadHeader(&buf)
			if err != nil {
				t.Fatal(err)
			}
			if h.Listener != name {
				t.Fatalf("got %q want %q", h.Listener, name)
			}
			if rest, _ := io.ReadAll(&buf); string(rest) != "payload" {
				t.Fatalf("ReadHeader consumed payload: left %q", rest)
			}
		})
	}
}

func TestParseHeaderErrors(t *testing.T) {
	tests := map[string]struct {
		in   []byte
		want error
	}{
		"empty":          {nil, ErrShortHeader},
		"version only":   {[]byte{1}, ErrShortHeader},
		"name truncated": {[]byte{1, 5, 'a', 'b'}, ErrShortHeader},
		"bad version":    {[]byte{2, 3, 'a', 'p', 'i'}, ErrHeaderVersion},
		"version zero":   {[]byte{0, 3, 'a', 'p', 'i'}, ErrHeaderVersion},
		"zero length":    {[]byte{1, 0}, ErrListenerName},
		"too long":       {append([]byte{1, 64}, bytes.Repeat([]byte{'a'}, 64)...), ErrListenerName},
		"length 255":     {[]byte{1, 255, 'a'}, ErrListenerName},
		"slash in name":  {[]byte{1, 3, 'a', '/', 'b'}, ErrListenerName},
		"colon in name":  {[]byte{1, 6, 'h', ':', '4', '4', '3', 'x'}, ErrListenerName},
		"NUL in name":    {[]byte{1, 2, 'a', 0}, ErrListenerName},
		"space in name":  {[]byte{1, 2, ' ', 'a'}, ErrListenerName},
		"non-ascii name": {[]byte{1, 2, 0xc3, 0xa9}, ErrListenerName},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, _, err := ParseHeader(tc.in)
			if !errors.Is(err, tc.want) {
				t.Fatalf("ParseHeader(%v) = %v, want %v", tc.in, err, tc.want)
			}
			// ReadHeader must fail too (short input → unexpected EOF).
			if _, err := ReadHeader(bytes.NewReader(tc.in)); err == nil {
				t.Fatalf("ReadHeader(%v) succeeded", tc.in)
			}
		})
	}
}

func TestValidateListenerName(t *testing.T) {
	tests := map[string]bool{
		"api": true, "gateway": true, "A.b_c-9": true,
		"": false, "a b": false, "a/b": false, "10.0.0.1:443": false, strings.Repeat("n", 64): false,
	}
	for name, ok := range tests {
		err := ValidateListenerName(name)
		if (err == nil) != ok {
			t.Errorf("ValidateListenerName(%q) = %v, want ok=%v", name, err, ok)
		}
		if _, err := AppendHeader(nil, Header{Listener: name}); (err == nil) != ok {
			t.Errorf("AppendHeader(%q) = %v, want ok=%v", name, err, ok)
		}
	}
}

// FuzzParseHeader feeds arbitrary bytes to the header parser: it must never
// panic, a success must round-trip, and ReadHeader must agree with it.
func FuzzParseHeader(f *testing.F) {
	f.Add([]byte{1, 3, 'a', 'p', 'i'})
	f.Add([]byte{1, 7, 'g', 'a', 't', 'e', 'w', 'a', 'y', 0xff})
	f.Add([]byte{1, 0})
	f.Add([]byte{1, 255})
	f.Add([]byte{2, 1, 'x'})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, n, err := ParseHeader(b)
		rh, rerr := ReadHeader(bytes.NewReader(b))
		if err != nil {
			if n != 0 {
				t.Fatalf("error %v with n=%d", err, n)
			}
			if rerr == nil {
				t.Fatalf("ReadHeader accepted %v that ParseHeader rejected (%v)", b, err)
			}
			return
		}
		if rerr != nil || rh != h {
			t.Fatalf("ReadHeader = %v, %v; ParseHeader = %v", rh, rerr, h)
		}
		if n < 3 || n > MaxHeaderLen || n > len(b) {
			t.Fatalf("bad length %d for %v", n, b)
		}
		enc, err := AppendHeader(nil, h)
		if err != nil {
			t.Fatalf("parsed header does not encode: %v", err)
		}
		if !bytes.Equal(enc, b[:n]) {
			t.Fatalf("round trip %v != %v", enc, b[:n])
		}
	})
}

func TestRefusalsAreNamedReplies(t *testing.T) {
	rs := Refusals()
	if len(rs) == 0 {
		t.Fatal("no refusals")
	}
	seen := map[string]bool{}
	for _, r := range rs {
		name := r.String()
		if r == ReplyOK || name == "unknown_reply" || seen[name] {
			t.Errorf("refusal %d named %q", r, name)
		}
		seen[name] = true
	}
	if got := Reply(255).String(); got != "unknown_reply" {
		t.Errorf("Reply(255) = %q", got)
	}
}
