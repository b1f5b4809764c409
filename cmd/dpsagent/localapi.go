package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/dpsagent/dpsagent/agent/store"
	"github.com/dpsagent/dpsagent/cmd/dpsagent/internal/localhttp"
)

// The local API: JSON over HTTP on a unix socket in the runtime directory, for
// the CLI beside a running daemon (status with live facts, renew now). Mode
// 0660: the service user and its group; root always.
const socketName = "dpsagent.sock"

func socketPath(cfg *Config) string { return filepath.Join(runtimeDir(cfg), socketName) }

// serveLocalAPI listens until ctx ends. A stale socket from a crashed run is
// replaced (the state directory's lock already proved no daemon runs).
func serveLocalAPI(ctx context.Context, cfg *Config, d *daemon, log *zap.Logger) (func(), error) {
	path := socketPath(cfg)
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("local API: remove stale socket: %w", err)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("local API: listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		l.Close()
		return nil, fmt.Errorf("local API: %w", err)
	}
	srv := localhttp.New(warnf(log))
	srv.Handle("GET", "/v1/status", func(w http.ResponseWriter, _ *http.Request) {
		m, err := d.store.Load()
		if err != nil && m == nil {
			m = &store.Manifest{}
		}
		view := liveStatus(offlineStatus(cfg, m, time.Now()), d.agent.Status())
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(view)
	})
	srv.Handle("POST", "/v1/renew", func(w http.ResponseWriter, _ *http.Request) {
		d.agent.Renew()
		w.WriteHeader(http.StatusAccepted)
	})
	stop := serveInBackground(srv, l, log, "local API")
	return func() {
		stop()
		_ = os.Remove(path)
	}, nil
}

// serveInBackground serves l until the function it returns is called, which
// waits for the end; name says whose end a warning is about.
func serveInBackground(srv *localhttp.Server, l net.Listener, log *zap.Logger, name string) func() {
	done := make(chan struct{})
	go func() {
		defer close(done)
		// ErrClosed: stopped before Serve began, which is no news.
		if err := srv.Serve(l); err != nil && !errors.Is(err, localhttp.ErrClosed) {
			log.Warn(name+" stopped", zap.Error(err))
		}
	}()
	return func() {
		_ = srv.Close()
		<-done
	}
}

// warnf logs a local HTTP server's complaints as warnings.
func warnf(log *zap.Logger) func(format string, args ...any) {
	return func(format string, args ...any) { log.Warn(fmt.Sprintf(format, args...)) }
}

// errNoDaemon says the local API did not answer: the daemon is not running
// (or runs with another runtime directory).
var errNoDaemon = errors.New("the dpsagent daemon is not running")

// askDaemon sends one request to the daemon's local API. Only a socket that
// is missing or refuses connections means no daemon (errNoDaemon); any other
// failure is a daemon, or something, that could not be asked.
func askDaemon(cfg *Config, method, path string) (*localhttp.Response, error) {
	socket := socketPath(cfg)
	resp, err := localhttp.Do(context.Background(), func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}, method, path)
	if err != nil {
		return nil, daemonError(socket, err)
	}
	return resp, nil
}

// daemonError says what a failure to ask the daemon on socket means.
func daemonError(socket string, err error) error {
	switch {
	case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("%w (%v)", errNoDaemon, err)
	case errors.Is(err, syscall.EACCES):
		return fmt.Errorf("permission denied on %s: run as root or as a member of group dpsagent", socket)
	}
	return fmt.Errorf("local API on %s: %w", socket, err) // such as an i/o timeout
}

func daemonStatus(cfg *Config) (statusView, error) {
	var v statusView
	resp, err := askDaemon(cfg, "GET", "/v1/status")
	if err != nil {
		return v, err
	}
	if resp.StatusCode != http.StatusOK {
		return v, fmt.Errorf("local API on %s: %s", socketPath(cfg), resp.Status)
	}
	if err := json.Unmarshal(resp.Body, &v); err != nil {
		return v, fmt.Errorf("local API on %s: the status is not the JSON expected: %w", socketPath(cfg), err)
	}
	return v, nil
}

func daemonRenew(cfg *Config) error {
	resp, err := askDaemon(cfg, "POST", "/v1/renew")
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("local API on %s: %s", socketPath(cfg), resp.Status)
	}
	return nil
}
