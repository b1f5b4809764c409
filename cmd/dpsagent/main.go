// Command dpsagent gives a Linux gateway an X.509 identity held in its TPM,
// issued through Azure's Device Provisioning Service, and keeps it valid.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
