package tunnel

import (
	"log/slog"
	"time"

	"github.com/l5d-tunnel/l5d-tunnel/pkg/smux"
)

// Streams refused by a session's cap (--max-streams) are counted in
// l5d_tunnel_refused_streams_total{reason="stream_limit"} every
// capMetricEvery and logged at most once per capLogEvery, so a flood of
// refusals cannot flood the log.
var (
	capMetricEvery = time.Second
	capLogEvery    = 10 * time.Second
)

// watchStreamCap runs until sess closes.
func watchStreamCap(sess *smux.Session, maxStreams int, m *metrics, log *slog.Logger, attrs ...any) {
	tick := time.NewTicker(capMetricEvery)
	defer tick.Stop()
	refused := m.refused.WithLabelValues(reasonStreamLimit)
	var counted, logged uint64
	var lastLog time.Time
	check := func(final bool) {
		n := sess.RefusedStreams()
		if n > counted {
			refused.Add(float64(n - counted))
			counted = n
		}
		if n > logged && (final || time.Since(lastLog) >= capLogEvery) {
			log.Warn("stream cap reached; new streams refused at once", append([]any{
				"refused", n - logged, "max_streams", maxStreams}, attrs...)...)
			logged, lastLog = n, time.Now()
		}
	}
	for {
		select {
		case <-tick.C:
			check(false)
		case <-sess.CloseChan():
			check(true)
			return
		}
	}
}
