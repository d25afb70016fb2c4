package mutate

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Helpers that read and write typed JSON values of unstructured objects as
// text, keeping track of whether a field was a JSON number or a string.

// optString reads m[key] as an optional string.
func optString(m map[string]any, key, path string) (value, error) {
	raw, ok := m[key]
	if !ok || raw == nil {
		return value{}, nil
	}
	s, ok := raw.(string)
	if !ok {
		return value{}, fmt.Errorf("%s is a %s, want a string", path, jsonType(raw))
	}
	return present(s), nil
}

// optStringList reads m[key] as an optional list of strings, joined by commas.
func optStringList(m map[string]any, key, path string) (value, error) {
	raw, ok := m[key]
	if !ok || raw == nil {
		return value{}, nil
	}
	l, ok := raw.([]any)
	if !ok {
		return value{}, fmt.Errorf("%s is a %s, want an array of strings", path, jsonType(raw))
	}
	parts := make([]string, 0, len(l))
	for i, x := range l {
		s, ok := x.(string)
		if !ok || strings.Contains(s, ",") {
			return value{}, fmt.Errorf("%s[%d] is a %s, want a string without commas", path, i, jsonType(x))
		}
		parts = append(parts, s)
	}
	return present(strings.Join(parts, ",")), nil
}

func splitList(s string) []any {
	if s == "" {
		return []any{}
	}
	parts := strings.Split(s, ",")
	out := make([]any, len(parts))
	for i, p := range parts {
		out[i] = p
	}
	return out
}

// numberText renders a JSON number as text; ok is false for other types and
// for numbers that are not integers.
func numberText(raw any) (string, bool) {
	switch n := raw.(type) {
	case int64:
		return strconv.FormatInt(n, 10), true
	case int32:
		return strconv.FormatInt(int64(n), 10), true
	case int:
		return strconv.Itoa(n), true
	case float64:
		if n != math.Trunc(n) || math.IsInf(n, 0) || math.Abs(n) > 1<<53 {
			return "", false
		}
		return strconv.FormatInt(int64(n), 10), true
	case json.Number:
		if _, err := n.Int64(); err != nil {
			return "", false
		}
		return n.String(), true
	}
	return "", false
}

// optPort reads m[key] as an optional port that may be a JSON string or an
// integer; isNumber tells which it was.
func optPort(m map[string]any, key, path string) (v value, isNumber bool, err error) {
	raw, ok := m[key]
	if !ok || raw == nil {
		return value{}, false, nil
	}
	if s, ok := raw.(string); ok {
		return present(s), false, nil
	}
	if t, ok := numberText(raw); ok {
		return present(t), true, nil
	}
	return value{}, false, fmt.Errorf("%s is a %s, want a string or an integer", path, jsonType(raw))
}

// setPort writes a port as a JSON integer when asNumber and the text is an
// integer, else as a string; absent removes it.
func setPort(m map[string]any, key string, v value, asNumber bool) {
	if !v.ok {
		delete(m, key)
		return
	}
	if asNumber {
		if n, err := strconv.ParseInt(v.text, 10, 64); err == nil {
			m[key] = n
			return
		}
	}
	m[key] = v.text
}

// setString writes a string; absent removes it.
func setString(m map[string]any, key string, v value) {
	if !v.ok {
		delete(m, key)
		return
	}
	m[key] = v.text
}

func itoa(p int32) string { return strconv.Itoa(int(p)) }
