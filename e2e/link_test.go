package e2e

import "testing"

func testLinks(t *testing.T, e *env) {
	e.needWebhook(t)
	e.needTunnel(t)
}
