package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/dpsagent/dpsagent/agent"
	"github.com/dpsagent/dpsagent/agent/store"
	"github.com/dpsagent/dpsagent/mqtt"
	"github.com/dpsagent/dpsagent/tpm"
	"github.com/dpsagent/dpsagent/tpm/keys"
)

// checkResult is one diagnostic; the JSON field names are a contract.
type checkResult struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Warn   bool   `json:"warning"`
	Detail string `json:"detail"`
	Hint   string `json:"hint"`
}

type checker struct {
	cfg     *Config
	now     time.Time
	timeout time.Duration
	results []checkResult
	manif   *store.Manifest
}

func (k *checker) add(name string, ok bool, detail, hint string) {
	if ok {
		hint = ""
	}
	k.results = append(k.results, checkResult{Name: name, OK: ok, Detail: detail, Hint: hint})
}

func (k *checker) warn(name, detail, hint string) {
	k.results = append(k.results, checkResult{Name: name, OK: true, Warn: true, Detail: detail, Hint: hint})
}

func (c *cli) checkCommand() *cobra.Command {
	var (
		path   string
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Diagnose this gateway: configuration, TPM, clock, network, identity, state",
		Long: `Run the checks that find what stands between this gateway and a working
identity, in order, each with what to do when it fails. Exit code 1 when any
check fails.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			k := &checker{now: time.Now(), timeout: 5 * time.Second}
			cfg, err := loadConfig(path, os.Environ())
			if err != nil {
				k.add("configuration", false, err.Error(), "fix the key named above, or run `dpsagent init` to write a new configuration")
			} else {
				k.cfg = cfg
				k.add("configuration", true, path+" is valid", "")
				k.run(cmd.Context())
			}
			failed := k.report(c.stdout, asJSON)
			if failed > 0 {
				return withCode(exitFailure, fmt.Errorf("%d check(s) failed", failed))
			}
			return nil
		},
	}
	c.configFlag(cmd, &path)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON list of {name, ok, warning, detail, hint}")
	return cmd
}

func (k *checker) run(ctx context.Context) {
	k.secretFile()
	var backend keys.Backend
	live, err := daemonStatus(k.cfg)
	daemon := err == nil
	switch {
	case daemon:
		// A TPM behind a raw socket serves one client: leave it to the daemon.
		k.add("TPM", true, "in use by the running daemon (state: "+string(live.State)+")", "")
	case !errors.Is(err, errNoDaemon):
		// The socket is there but does not answer as it should: a daemon
		// may be running and using the TPM, so it is left alone too.
		k.add("local API", false, err.Error(),
			"run dpsagent check as root or as a member of group dpsagent; if the daemon does not answer, see journalctl -u dpsagent and restart it")
		k.warn("TPM", "not looked at: a daemon seems to be running and may be using it", "")
	default:
		backend = k.tpm()
	}
	if backend != nil {
		defer backend.Close()
	}
	k.clock()
	k.stateDir()
	host, addr, err := mqtt.ParseEndpoint(k.cfg.Advanced.DPSEndpoint, 8883)
	if err != nil {
		k.add("DPS endpoint", false, err.Error(), "fix advanced.dps_endpoint")
	} else {
		k.reach(ctx, "DPS", host, addr)
	}
	if k.manif != nil && k.manif.Current != nil {
		hub := k.manif.Current.AssignedHub
		k.reach(ctx, "hub", hub, net.JoinHostPort(hub, strconv.Itoa(k.cfg.Advanced.HubPort)))
		if daemon {
			k.liveIdentity(live)
		} else {
			k.identity(backend)
		}
	}
}

func (k *checker) secretFile() {
	switch k.cfg.Onboarding.Method {
	case OnboardSymmetricKey:
		if _, err := k.cfg.onboardingKey(); err != nil {
			k.add("onboarding key", false, err.Error(), "write the base64 key from the enrollment into the file, mode 600")
			return
		}
		k.add("onboarding key", true, k.cfg.Onboarding.SymmetricKeyFile+" is readable, private and holds a base64 key", "")
	case OnboardX509:
		if _, err := readCertificates(k.cfg.Onboarding.X509.CertificateFile); err != nil {
			k.add("birth certificate", false, err.Error(), "name the PEM chain of the X.509 birth certificate in onboarding.x509.certificate_file")
			return
		}
		k.add("birth certificate", true, k.cfg.Onboarding.X509.CertificateFile+" holds a certificate chain", "")
	}
}

// tpm opens the key backend and checks the configured algorithm; it returns
// the backend for the identity check.
func (k *checker) tpm() keys.Backend {
	spec := k.cfg.Advanced.TPM
	if spec == "none" {
		k.warn("TPM", "advanced.tpm is none: keys are kept in files", "use a TPM when the device has one (advanced.tpm: /dev/tpmrm0)")
		return nil
	}
	k.tpmAccess(spec)
	t, err := tpm.Open(spec, tpm.Options{})
	if err != nil {
		k.add("TPM", false, err.Error(), "see the message above; `dpsagent tpm info --tpm "+spec+"` probes the TPM alone")
		return nil
	}
	info, err := t.Info()
	if err != nil {
		_ = t.Close()
		k.add("TPM", false, err.Error(), "the TPM answers but not as expected: check its firmware, or try tcp:/unix: with an emulator")
		return nil
	}
	k.add("TPM", true, fmt.Sprintf("%s: %s %s, firmware %s", spec, info.Manufacturer, info.VendorString, info.FirmwareVersion), "")
	alg, _ := keys.ParseAlgorithm(k.cfg.Advanced.KeyAlgorithm)
	if alg == keys.Auto {
		k.add("key algorithm", true, "auto picks "+string(info.AutoAlgorithm)+" on this TPM", "")
	} else {
		k.add("key algorithm", slices.Contains(info.KeyAlgorithms, alg), fmt.Sprintf("%s; this TPM supports %v", alg, info.KeyAlgorithms),
			"set advanced.key_algorithm to one the TPM supports, or auto")
	}
	return t
}

// tpmAccess checks the service user can open the device: it belongs to the
// tss group and the device is group-readable and writable.
func (k *checker) tpmAccess(spec string) {
	if !filepath.IsAbs(spec) {
		return
	}
	fi, err := os.Stat(spec)
	if err != nil {
		return // the open below explains it
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	g, gerr := user.LookupGroup("tss")
	if !ok || gerr != nil {
		return
	}
	if strconv.Itoa(int(st.Gid)) != g.Gid || fi.Mode().Perm()&0o060 != 0o060 {
		k.add("TPM access", false, fmt.Sprintf("%s is not read-write for group tss (mode %04o)", spec, fi.Mode().Perm()),
			"install the udev rules of tpm2-tools (or tpm-udev), which give /dev/tpmrm0 to group tss")
		return
	}
	u, err := user.Lookup("dpsagent")
	if err != nil {
		return // not installed as a service here
	}
	gids, _ := u.GroupIds()
	k.add("TPM access", slices.Contains(gids, g.Gid), "the service user dpsagent is in group tss",
		"usermod -aG tss dpsagent, then restart the service")
}

func (k *checker) clock() {
	if b := buildTime(); !b.IsZero() && k.now.Before(b) {
		k.add("clock", false, "the clock ("+stamp(k.now)+") is earlier than this build ("+stamp(b)+")",
			"enable time synchronisation (timedatectl set-ntp true) or set the clock; the agent waits for it")
		return
	}
	if _, err := os.Stat("/run/systemd/timesync/synchronized"); err == nil {
		k.add("clock", true, "synchronised by systemd-timesyncd: "+stamp(k.now), "")
		return
	}
	k.warn("clock", "the clock looks plausible ("+stamp(k.now)+") but no synchronisation was confirmed",
		"certificates depend on the date: run an NTP client (timedatectl set-ntp true)")
}

func (k *checker) stateDir() {
	dir := k.cfg.Advanced.StateDir
	m, err := store.Peek(dir)
	switch {
	case err != nil && errors.Is(err, os.ErrNotExist):
		k.add("state directory", true, dir+" does not exist yet; the service creates it (StateDirectory=)", "")
		return
	case err != nil:
		k.add("state directory", false, err.Error(), "see above; `dpsagent reset` starts afresh")
		return
	}
	k.manif = m
	var fs syscall.Statfs_t
	if err := syscall.Statfs(dir, &fs); err == nil {
		free := fs.Bavail * uint64(fs.Bsize)
		k.add("state directory", free > 1<<20, fmt.Sprintf("%s: %d MiB free", dir, free>>20), "free some space on "+dir+"'s file system")
	}
}

// reach resolves, connects and completes a verified TLS handshake.
func (k *checker) reach(ctx context.Context, what, host, addr string) {
	ctx, cancel := context.WithTimeout(ctx, k.timeout)
	defer cancel()
	if net.ParseIP(host) == nil {
		if _, err := net.DefaultResolver.LookupHost(ctx, host); err != nil {
			k.add(what+" DNS", false, err.Error(), "check /etc/resolv.conf and the name "+host)
			return
		}
		k.add(what+" DNS", true, host+" resolves", "")
	}
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		k.add(what+" TCP", false, err.Error(), "allow outbound TCP to "+addr+" (MQTT over TLS, port 8883) in the firewall or proxy")
		return
	}
	defer conn.Close()
	k.add(what+" TCP", true, "connected to "+addr, "")
	roots, err := mqtt.TrustConfig{BundleFile: k.cfg.Advanced.TrustBundleFile}.Roots()
	if err != nil {
		k.add(what+" TLS", false, err.Error(), "fix advanced.trust_bundle_file")
		return
	}
	tc := tls.Client(conn, &tls.Config{ServerName: host, RootCAs: roots, MinVersion: tls.VersionTLS12})
	_ = tc.SetDeadline(time.Now().Add(k.timeout))
	if err := tc.HandshakeContext(ctx); err != nil {
		var unknown x509.UnknownAuthorityError
		hint := "check the server name and the network path"
		if errors.As(err, &unknown) {
			hint = "the server's certificate is not trusted: behind a TLS-inspecting proxy (or with iotemu) put its CA in advanced.trust_bundle_file"
		}
		k.add(what+" TLS", false, err.Error(), hint)
		return
	}
	k.add(what+" TLS", true, "the server certificate for "+host+" verifies", "")
}

// identity checks the stored identity: the key loads and is the
// certificate's, the chain verifies, and how long it has left.
func (k *checker) identity(backend keys.Backend) {
	id := k.manif.Current
	if id.KeyStorage == store.StorageSAS {
		k.warn("identity", "identity: sas (the legacy symmetric-key mode)", "set identity: x509 for a certificate held in the TPM")
		return
	}
	dir := k.cfg.Advanced.StateDir
	pemChain, err := os.ReadFile(filepath.Join(dir, id.ChainFile))
	if err != nil {
		k.add("identity", false, err.Error(), "`dpsagent reset` to provision afresh")
		return
	}
	chain, err := agent.DecodeChain(pemChain)
	if err != nil {
		k.add("identity", false, err.Error(), "`dpsagent reset` to provision afresh")
		return
	}
	if backend == nil {
		k.warn("identity", "not checked against the key: the key backend is unavailable", "fix the TPM check above")
		return
	}
	blob, err := os.ReadFile(filepath.Join(dir, id.KeyFile))
	if err != nil {
		k.add("identity", false, err.Error(), "`dpsagent reset` to provision afresh")
		return
	}
	key, err := backend.LoadKey(blob)
	if err != nil {
		k.add("identity", false, "the stored key does not load: "+err.Error(), "`dpsagent reset` to provision a new key")
		return
	}
	v, err := agent.VerifyIssuedChain(chain, key.Public(), id.RegistrationID, k.now)
	if err != nil {
		k.add("identity", false, err.Error(), "the agent re-provisions by itself; `dpsagent reset` forces it")
		return
	}
	left := v.Leaf.NotAfter.Sub(k.now)
	k.add("identity", true, fmt.Sprintf("certificate %s for %s matches the %s key in %s; %s left", id.Serial, id.RegistrationID, id.KeyAlgorithm, id.KeyStorage, approx(left)), "")
}

// liveIdentity judges the identity by what the running daemon, which holds
// the key, reports.
func (k *checker) liveIdentity(v statusView) {
	c := v.Certificate
	switch {
	case c == nil:
		k.warn("identity", "the daemon reports no certificate (state: "+string(v.State)+")", "see `dpsagent status`")
	case !k.now.Before(c.NotAfter):
		k.add("identity", false, "certificate "+c.Serial+" expired at "+stamp(c.NotAfter), "the agent renews through DPS by itself; see `dpsagent status` for why it has not")
	default:
		k.add("identity", v.Connected, fmt.Sprintf("the daemon is %s with certificate %s; %s left", stateSentence(v), c.Serial, approx(c.NotAfter.Sub(k.now))),
			"see `dpsagent status` for the last error and its hint")
	}
}

// report prints the results and returns how many failed.
func (k *checker) report(w io.Writer, asJSON bool) int {
	failed := 0
	for _, r := range k.results {
		if !r.OK {
			failed++
		}
	}
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(k.results)
		return failed
	}
	for _, r := range k.results {
		mark := "✓"
		switch {
		case !r.OK:
			mark = "✗"
		case r.Warn:
			mark = "!"
		}
		fmt.Fprintf(w, "%s %-18s %s\n", mark, r.Name, printable(r.Detail))
		if r.Hint != "" {
			fmt.Fprintf(w, "  %-18s → %s\n", "", printable(r.Hint))
		}
	}
	if failed == 0 {
		fmt.Fprintln(w, "\nAll checks passed.")
	} else {
		fmt.Fprintf(w, "\n%d check(s) failed; fix them in the order shown.\n", failed)
	}
	return failed
}
