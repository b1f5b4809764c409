package emulator

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/dpsagent/dpsagent/emulator/internal/atomicfile"
	"github.com/dpsagent/dpsagent/emulator/mqttsrv"
	"github.com/dpsagent/dpsagent/emulator/pki"
)

// Options are the emulator's collaborators; nil fields mean real defaults.
type Options struct {
	Logger *zap.Logger
	Now    func() time.Time
}

// Emulator is a running set of DPS, hub and admin endpoints over one model.
type Emulator struct {
	cfg       Config
	dataDir   string
	log       *zap.Logger
	now       func() time.Time
	state     *State
	faults    *Faults
	deviceCA  *pki.DeviceCA
	serverCA  *pki.ServerCA
	keyPolicy pki.KeyPolicy

	dps  *dps
	hubs map[string]*hub // by hub name

	mu        sync.Mutex
	servers   []*mqttsrv.Server
	admin     *http.Server
	listeners []net.Listener
	wg        sync.WaitGroup
	endpoints *Endpoints
	closed    bool
}

// Endpoints is written to DATA/endpoints.json once every listener is up; tests
// and tools wait for it to learn the actual ports.
type Endpoints struct {
	IDScope        string                 `json:"id_scope"`
	DPS            string                 `json:"dps"`
	Hubs           map[string]HubEndpoint `json:"hubs"`
	Admin          string                 `json:"admin"`
	TLSCAFile      string                 `json:"tls_ca_file"`
	DeviceRootFile string                 `json:"device_root_file"`
}

// HubEndpoint is where a hub listens and the host name DPS assigns devices to.
type HubEndpoint struct {
	Host    string `json:"host"`
	Address string `json:"address"`
}

// EndpointsFile is the file name under the data directory.
const EndpointsFile = "endpoints.json"

// New prepares an emulator over dataDir, creating or reloading its CAs.
func New(cfg Config, dataDir string, opts Options) (*Emulator, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data directory: %w", err)
	}
	deviceCA, err := pki.OpenDeviceCA(dataDir, pki.Options{Now: now})
	if err != nil {
		return nil, err
	}
	serverCA, err := pki.OpenServerCA(dataDir, pki.Options{Now: now})
	if err != nil {
		return nil, err
	}
	policy, err := cfg.KeyPolicy()
	if err != nil {
		return nil, err
	}
	state := NewState(cfg.Enrollments)
	if err := state.openRegistry(filepath.Join(dataDir, RegistryDir), log.Named("registry")); err != nil {
		return nil, err
	}
	if err := state.openEnrollments(filepath.Join(dataDir, EnrollmentsDir), cfg.hubNames(), log.Named("enrollments")); err != nil {
		return nil, err
	}
	for hub, n := range state.HubLoad() {
		if _, ok := cfg.hub(hub); !ok {
			log.Warn("the device registry holds devices of a hub the configuration does not have; they are refused until DPS assigns them again",
				zap.String("hub", hub), zap.Int("devices", n))
		}
	}
	e := &Emulator{
		cfg: cfg, dataDir: dataDir, log: log, now: now,
		state: state, faults: NewFaults(nil),
		deviceCA: deviceCA, serverCA: serverCA, keyPolicy: policy,
		hubs: map[string]*hub{},
	}
	e.dps = newDPS(e)
	for _, h := range cfg.Hubs {
		hb := newHub(e, h)
		hb.conflictCode = cfg.Certificates.CredentialAPIConflictCode
		e.hubs[h.Name] = hb
	}
	return e, nil
}

// State is the service model, for tests and the admin API.
func (e *Emulator) State() *State { return e.state }

// Faults is the fault injector.
func (e *Emulator) Faults() *Faults { return e.faults }

// Start opens every listener, serves, and writes endpoints.json.
func (e *Emulator) Start() (*Endpoints, error) {
	ep := &Endpoints{
		IDScope:        e.cfg.IDScope,
		Hubs:           map[string]HubEndpoint{},
		TLSCAFile:      filepath.Join(e.dataDir, pki.ServerCAFile),
		DeviceRootFile: filepath.Join(e.dataDir, pki.DeviceRootFile),
	}
	var err error
	if ep.DPS, err = e.serveMQTT("dps", e.cfg.DPS.Listen, []string{hostOf(e.cfg.DPS.Listen)}, dpsMaxPacket, e.dps); err != nil {
		e.Close()
		return nil, err
	}
	for _, h := range e.cfg.Hubs {
		addr, err := e.serveMQTT("hub "+h.Name, h.Listen, []string{h.Host, hostOf(h.Listen)}, hubMaxPacket, e.hubs[h.Name])
		if err != nil {
			e.Close()
			return nil, err
		}
		ep.Hubs[h.Name] = HubEndpoint{Host: h.Host, Address: addr}
	}
	if ep.Admin, err = e.serveAdmin(e.cfg.Admin.Listen); err != nil {
		e.Close()
		return nil, err
	}
	if err := writeJSONAtomic(filepath.Join(e.dataDir, EndpointsFile), ep); err != nil {
		e.Close()
		return nil, err
	}
	e.mu.Lock()
	e.endpoints = ep
	e.mu.Unlock()
	e.log.Info("iotemu ready", zap.String("dps", ep.DPS), zap.String("admin", ep.Admin), zap.String("id_scope", ep.IDScope))
	return ep, nil
}

// Packet caps: DPS limits messages to 96 KB, IoT Hub device-to-cloud to 256 KB.
const (
	dpsMaxPacket = 96 << 10
	hubMaxPacket = 256<<10 + 1024 // the message plus its topic and header
)

func (e *Emulator) serveMQTT(name, listen string, hosts []string, maxPacket int, h mqttsrv.Handler) (string, error) {
	cert, err := e.serverCA.ServerCertificate(hosts)
	if err != nil {
		return "", fmt.Errorf("%s: server certificate: %w", name, err)
	}
	tlsConf := &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		// The front-ends authenticate client certificates themselves, against
		// the enrollment's CA, a registered thumbprint or the device PKI.
		ClientAuth: tls.RequestClientCert,
	}
	srv, err := mqttsrv.New(mqttsrv.Options{Handler: h, MaxPacketSize: maxPacket, Logger: e.log.Named(name)})
	if err != nil {
		return "", err
	}
	ls, err := listenAll(listen)
	if err != nil {
		return "", fmt.Errorf("%s: %w", name, err)
	}
	e.mu.Lock()
	e.servers = append(e.servers, srv)
	e.listeners = append(e.listeners, ls...)
	e.mu.Unlock()
	for _, l := range ls {
		tl := tls.NewListener(l, tlsConf)
		e.wg.Add(1)
		go func() {
			defer e.wg.Done()
			if err := srv.Serve(tl); err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, mqttsrv.ErrServerClosed) {
				e.log.Error("MQTT listener stopped", zap.String("endpoint", name), zap.Error(err))
			}
		}()
	}
	return ls[0].Addr().String(), nil
}

// listenAll opens addr; "localhost:PORT" opens 127.0.0.1 and ::1 on one port,
// because clients resolving localhost try ::1 first.
func listenAll(addr string) ([]net.Listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("listen address %q: %w (use HOST:PORT)", addr, err)
	}
	if host != "localhost" {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("listen on %s: %w", addr, err)
		}
		return []net.Listener{l}, nil
	}
	for attempt := 0; attempt < 10; attempt++ {
		v4, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", port))
		if err != nil {
			return nil, fmt.Errorf("listen on %s: %w", addr, err)
		}
		p := strconv.Itoa(v4.Addr().(*net.TCPAddr).Port)
		v6, err := net.Listen("tcp", net.JoinHostPort("::1", p))
		if err == nil {
			return []net.Listener{v4, v6}, nil
		}
		_ = v4.Close()
		if port != "0" || isNoIPv6(err) {
			if isNoIPv6(err) { // a machine without IPv6 loopback: IPv4 alone
				v4, err = net.Listen("tcp", net.JoinHostPort("127.0.0.1", port))
				if err != nil {
					return nil, err
				}
				return []net.Listener{v4}, nil
			}
			return nil, fmt.Errorf("listen on [::1]:%s: %w", p, err)
		}
	}
	return nil, fmt.Errorf("listen on %s: no port free on both 127.0.0.1 and ::1", addr)
}

func isNoIPv6(err error) bool {
	var se *os.SyscallError
	return errors.As(err, &se) && (se.Err.Error() == "cannot assign requested address" || se.Err.Error() == "address family not supported by protocol")
}

// Close stops every endpoint and waits for their goroutines.
func (e *Emulator) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	servers, admin, listeners := e.servers, e.admin, e.listeners
	e.servers, e.admin, e.listeners = nil, nil, nil
	e.mu.Unlock()
	var errs []error
	// The devices' connections end first: admin calls that wait on a device
	// (a direct method, a cloud-to-device message) then end at once instead
	// of holding the admin API's shutdown for its whole grace period.
	for _, s := range servers {
		errs = append(errs, s.Close())
	}
	if admin != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		errs = append(errs, admin.Shutdown(ctx))
		cancel()
	}
	for _, l := range listeners {
		_ = l.Close()
	}
	e.dps.close()
	for _, h := range e.hubs {
		h.close()
	}
	e.wg.Wait()
	return errors.Join(errs...)
}

// writeJSONAtomic replaces path with v, indented, through atomicfile.
func writeJSONAtomic(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", filepath.Base(path), err)
	}
	return atomicfile.Write(path, append(data, '\n'))
}

// logDate is a log field for a calendar time (a certificate's notAfter, an
// expiry): RFC 3339 in UTC, as a string. iotemu's console encoder prints time
// fields as a time of day, which would drop the date of an expiry weeks away.
func logDate(key string, t time.Time) zap.Field {
	return zap.String(key, t.UTC().Format(time.RFC3339))
}
