package smux

import "strings"

// Protocol extensions are negotiated on the websocket upgrade: the client
// lists what it supports in FeaturesHeader, the server answers in its 101
// response with the subset it supports too, and both build their session
// Config from the answer. A peer that does not know the header (or
// xtaci/smux) never sees an extension frame.
const (
	// FeaturesHeader carries a comma-separated list of extensions.
	FeaturesHeader = "X-L5d-Tunnel-Features"
	// FeatureReset is the stream reset extension (Config.Reset).
	FeatureReset = "reset"
)

// HasFeature reports whether the comma-separated header value lists name.
func HasFeature(value, name string) bool {
	for f := range strings.SplitSeq(value, ",") {
		if strings.EqualFold(strings.TrimSpace(f), name) {
			return true
		}
	}
	return false
}
