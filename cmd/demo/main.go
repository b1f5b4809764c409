// Command demo runs dpsagent's main job on the embedded default: the iotemu
// emulator and its simulated TPM, nothing else installed. `make demo` builds the
// binaries and runs it. It says what happens in plain language, ends by itself
// and leaves no process behind.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

func main() {
	bin := flag.String("bin", "bin", "directory holding the dpsagent and iotemu binaries")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, *bin, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "demo failed: %v\n", err)
		os.Exit(1)
	}
}

type demo struct {
	bin  string
	dir  string
	out  io.Writer
	step int
}

func run(ctx context.Context, bin string, out io.Writer) error {
	dir, err := os.MkdirTemp("", "dpsagent-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	d := &demo{bin: bin, dir: dir, out: out}

	d.say("Starting a simulated TPM (iotemu tpm), standing in for the gateway's TPM 2.0 chip")
	tpmSpec, stopTPM, err := d.startTPM(ctx)
	if err != nil {
		return err
	}
	defer stopTPM()
	d.detail("listening on %s", tpmSpec)

	d.say("Asking the TPM what it supports (dpsagent tpm info)")
	info, err := d.dpsagent(ctx, "tpm", "info", "--tpm", tpmSpec)
	if err != nil {
		return err
	}
	d.detail("%s", info)

	d.say("Creating a key inside the TPM and a certificate signing request for it (dpsagent birth-key)")
	keyPath := filepath.Join(dir, "device-key.tpm")
	csrPath := filepath.Join(dir, "device.csr")
	if _, err := d.dpsagent(ctx, "birth-key", "--tpm", tpmSpec, "--registration-id", "demo-gateway-001", "--key-out", keyPath, "--out", csrPath); err != nil {
		return err
	}
	csr, err := os.ReadFile(csrPath)
	if err != nil {
		return err
	}
	d.detail("the private key never left the TPM; only its wrapped blob was written (%s)", filepath.Base(keyPath))
	d.detail("the CSR names CN=demo-gateway-001, as DPS requires:\n%s", csr)

	stopTPM()
	fmt.Fprintf(out, "\nDone: a TPM-held key and its CSR, ready for DPS to issue a certificate.\n")
	return nil
}

func (d *demo) say(format string, args ...any) {
	d.step++
	fmt.Fprintf(d.out, "\n%d. %s\n", d.step, fmt.Sprintf(format, args...))
}

func (d *demo) detail(format string, args ...any) {
	text := strings.TrimRight(fmt.Sprintf(format, args...), "\n")
	for _, line := range strings.Split(text, "\n") {
		fmt.Fprintf(d.out, "   %s\n", line)
	}
}

func (d *demo) dpsagent(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(d.bin, "dpsagent"), args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("dpsagent %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// startTPM runs iotemu's simulated TPM on a free port and returns its spec and
// a stop function that is safe to call twice.
func (d *demo) startTPM(ctx context.Context) (string, func(), error) {
	cmd := exec.Command(filepath.Join(d.bin, "iotemu"), "tpm", "--listen", "127.0.0.1:0", "--state", filepath.Join(d.dir, "tpm"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return "", nil, err
	}
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		return "", nil, fmt.Errorf("start iotemu: %w (run `make build` first)", err)
	}
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if spec, ok := strings.CutPrefix(sc.Text(), "ready: simulated TPM on "); ok {
				ready <- spec
			}
		}
		close(ready)
	}()
	select {
	case spec, ok := <-ready:
		if !ok {
			stop()
			return "", nil, errors.New("iotemu tpm exited before it was ready")
		}
		return spec, stop, nil
	case <-time.After(30 * time.Second):
	case <-ctx.Done():
	}
	stop()
	return "", nil, errors.New("iotemu tpm did not become ready")
}
