package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

type demo struct {
	bin      string
	dir      string
	out      io.Writer
	lifetime time.Duration
	step     int

	mu       sync.Mutex
	procs    []*proc
	agent    *proc
	outputMu sync.Mutex
}

// proc is a child process, stopped by SIGTERM (then SIGKILL) at the end.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

func (d *demo) say(format string, args ...any) {
	d.outputMu.Lock()
	defer d.outputMu.Unlock()
	d.step++
	fmt.Fprintf(d.out, "\n%d. %s\n", d.step, fmt.Sprintf(format, args...))
}

func (d *demo) detail(format string, args ...any) {
	d.outputMu.Lock()
	defer d.outputMu.Unlock()
	for _, line := range strings.Split(strings.TrimRight(fmt.Sprintf(format, args...), "\n"), "\n") {
		fmt.Fprintf(d.out, "   %s\n", line)
	}
}

// start runs a binary from the bin directory; each line it prints is handed to
// onLine (nil discards them).
func (d *demo) start(name string, onLine func(string), args ...string) (*proc, error) {
	cmd := exec.Command(filepath.Join(d.bin, name), args...)
	// If the demo itself dies, its children go with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w (run `make build` first)", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			if onLine != nil {
				onLine(sc.Text())
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	go func() {
		p.err = cmd.Wait()
		_ = pw.Close()
		close(p.done)
	}()
	d.mu.Lock()
	d.procs = append(d.procs, p)
	d.mu.Unlock()
	return p, nil
}

// stopAll stops the children, newest first; it is safe to call twice.
func (d *demo) stopAll() {
	d.mu.Lock()
	procs := d.procs
	d.procs = nil
	d.mu.Unlock()
	for i := len(procs) - 1; i >= 0; i-- {
		p := procs[i]
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
}

type endpoints struct {
	IDScope string `json:"id_scope"`
	DPS     string `json:"dps"`
	Hubs    map[string]struct {
		Address string `json:"address"`
	} `json:"hubs"`
	Admin     string `json:"admin"`
	TLSCAFile string `json:"tls_ca_file"`
}

func (d *demo) startEmulator(ctx context.Context, config string) (*endpoints, error) {
	cfg := filepath.Join(d.dir, "iotemu.yaml")
	if err := os.WriteFile(cfg, []byte(config), 0o600); err != nil {
		return nil, err
	}
	data := filepath.Join(d.dir, "iotemu")
	ready := make(chan string, 1)
	_, err := d.start("iotemu", func(line string) {
		if rest, ok := strings.CutPrefix(line, "ready "); ok {
			select {
			case ready <- rest:
			default:
			}
		}
	}, "serve", "--data", data, "--config", cfg)
	if err != nil {
		return nil, err
	}
	select {
	case line := <-ready:
		var ep endpoints
		if err := json.Unmarshal([]byte(line), &ep); err != nil {
			return nil, fmt.Errorf("iotemu's ready line: %w", err)
		}
		return &ep, nil
	case <-time.After(30 * time.Second):
		return nil, errors.New("iotemu did not become ready within 30s")
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (d *demo) startTPM(ctx context.Context) (string, error) {
	ready := make(chan string, 1)
	_, err := d.start("iotemu", func(line string) {
		if spec, ok := strings.CutPrefix(line, "ready: simulated TPM on "); ok {
			select {
			case ready <- spec:
			default:
			}
		}
	}, "tpm", "--listen", "127.0.0.1:0", "--state", filepath.Join(d.dir, "tpm"))
	if err != nil {
		return "", err
	}
	select {
	case spec := <-ready:
		return spec, nil
	case <-time.After(30 * time.Second):
		return "", errors.New("iotemu tpm did not become ready within 30s")
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// startAgent runs `dpsagent run` and shows its log lines, which are written
// for people.
func (d *demo) startAgent(_ context.Context, cfgPath string) error {
	p, err := d.start("dpsagent", func(line string) { d.detail("dpsagent: %s", line) }, "run", "--config", cfgPath)
	if err != nil {
		return err
	}
	d.mu.Lock()
	d.agent = p
	d.mu.Unlock()
	return nil
}

// agentExited reports an agent that stopped on its own.
func (d *demo) agentExited() error {
	d.mu.Lock()
	p := d.agent
	d.mu.Unlock()
	if p == nil {
		return nil
	}
	select {
	case <-p.done:
		return fmt.Errorf("dpsagent exited: %v", p.err)
	default:
		return nil
	}
}

func getJSON(ctx context.Context, url string, v any) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

func splitPort(addr string) (string, string, error) { return net.SplitHostPort(addr) }
