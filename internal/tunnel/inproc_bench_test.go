package tunnel

import (
	"testing"
	"time"
)

// BenchmarkInProcessUpload runs server, client and upstream in the test
// process (for profiling with -cpuprofile); the process-level figures are in
// BenchmarkBulk.
func BenchmarkInProcessUpload(b *testing.B) {
	up := startBenchUpstreams(b)
	scfg := serverConfig("sink")
	scfg.Session = DefaultServerConfig().Session
	s := startServer(b, scfg)
	ccfg := clientConfig(s, map[string]string{"sink": up.sink})
	ccfg.Session = scfg.Session
	c, _ := startClient(b, ccfg)
	waitFor(b, "ready", 5*time.Second, c.Ready)
	const size = 64 * mib
	b.SetBytes(size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		upload(b, s.ListenerAddr("sink"), size)
	}
}
