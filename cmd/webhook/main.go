package main

import (
	"os"

	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/l5d-tunnel/l5d-tunnel/internal/webhook"
)

func main() {
	os.Exit(webhook.Main(ctrl.SetupSignalHandler(), os.Args[1:], os.Stdout, os.Stderr))
}
