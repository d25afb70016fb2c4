package smux

import "strings"

// Protocol extensions are negotiated on the websocket upgrade: the client
// lists what it supports in FeaturesHeader (Features()), the server answers
// in its 101 response with the subset it supports too (AcceptFeatures), and
// both build their session Config from the answer (Config.WithFeatures). A
// peer that does not know the header, or xtaci/smux, never sees an
// extension and gets plain smux v2.
const (
	// FeaturesHeader carries a comma-separated list of extensions.
	FeaturesHeader = "X-L5d-Tunnel-Features"
	// FeatureReset is the stream reset extension (Config.Reset).
	FeatureReset = "reset"
	// FeatureSmallWindow makes both ends start every stream with a
	// SmallInitialWindow instead of smux v2's 256 KiB, so a stream nobody
	// reads parks a quarter as much (Config.InitialWindow).
	FeatureSmallWindow = "initial-window-64k"
)

// SmallInitialWindow is the initial stream window under FeatureSmallWindow.
const SmallInitialWindow = 64 << 10

var knownFeatures = []string{FeatureReset, FeatureSmallWindow}

// Features is the value a client offers in FeaturesHeader.
func Features() string { return strings.Join(knownFeatures, ", ") }

// AcceptFeatures is the server's answer to an offer: the extensions both
// sides support ("" if none).
func AcceptFeatures(offer string) string {
	var both []string
	for _, f := range knownFeatures {
		if HasFeature(offer, f) {
			both = append(both, f)
		}
	}
	return strings.Join(both, ", ")
}

// HasFeature reports whether the comma-separated header value lists name.
func HasFeature(value, name string) bool {
	for f := range strings.SplitSeq(value, ",") {
		if strings.EqualFold(strings.TrimSpace(f), name) {
			return true
		}
	}
	return false
}

// WithFeatures returns c set up for the extensions both ends agreed on
// (the server's answer).
func (c Config) WithFeatures(agreed string) Config {
	c.Reset = HasFeature(agreed, FeatureReset)
	if HasFeature(agreed, FeatureSmallWindow) {
		c.InitialWindow = SmallInitialWindow
	} else {
		c.InitialWindow = initialWindow
	}
	return c
}
