// Command demo runs dpsagent's main job on the embedded default: the iotemu
// emulator (DPS, certificate issuance, IoT Hub) and its simulated TPM, with
// nothing else installed. `make demo` builds the binaries and runs it. It tells
// what happens in plain language, ends by itself, and leaves no process behind.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	bin := flag.String("bin", "bin", "directory holding the dpsagent and iotemu binaries")
	lifetime := flag.Duration("lifetime", 40*time.Second, "lifetime of the issued certificates (short, so a renewal happens during the demo)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, *bin, *lifetime, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "\ndemo failed: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, bin string, lifetime time.Duration, out io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "dpsagent-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	d := &demo{bin: bin, dir: dir, out: out, lifetime: lifetime}
	defer d.stopAll()
	return d.lifecycle(ctx)
}
