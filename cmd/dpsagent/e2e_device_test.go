package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dpsagent/dpsagent/tpm"
)

// agentConfig is a dpsagent configuration file's content.
type agentConfig struct {
	IDScope        string
	RegistrationID string
	Onboarding     string // the YAML onboarding block
	DPSEndpoint    string
	TrustBundle    string
	TPM            string
	StateDir       string
	HubPort        int
	Extra          string // appended as is
}

func (c agentConfig) yaml() string {
	return fmt.Sprintf(`id_scope: %s
registration_id: %s
%sadvanced:
  dps_endpoint: %q
  trust_bundle_file: %q
  tpm: %q
  state_dir: %q
  hub_port: %d
%s`, c.IDScope, c.RegistrationID, c.Onboarding, c.DPSEndpoint, c.TrustBundle, c.TPM, c.StateDir, c.HubPort, c.Extra)
}

// symmetricOnboarding writes key to a private file and returns the
// onboarding block naming it.
func symmetricOnboarding(t testing.TB, key string, group bool) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "onboarding.key")
	if err := os.WriteFile(path, []byte(key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("onboarding:\n  method: symmetric_key\n  symmetric_key_file: %q\n  group_key: %t\n", path, group)
}

// agentDevice is one gateway under test: its configuration and state directory.
type agentDevice struct {
	bins     binaries
	regID    string
	cfg      agentConfig
	cfgPath  string
	stateDir string
}

// newDevice writes a configuration for regID against e with the TPM at
// tpmSpec; the state directory is created by the agent (mode 0700).
func newDevice(t testing.TB, bins binaries, e *emulator, regID, tpmSpec, onboarding string) *agentDevice {
	t.Helper()
	dir := t.TempDir()
	d := &agentDevice{
		bins: bins, regID: regID,
		cfgPath:  filepath.Join(dir, "config.yaml"),
		stateDir: filepath.Join(dir, "state"),
	}
	d.cfg = agentConfig{
		IDScope: e.ep.IDScope, RegistrationID: regID, Onboarding: onboarding,
		DPSEndpoint: e.ep.DPS, TrustBundle: e.ep.TLSCAFile, TPM: tpmSpec,
		StateDir: d.stateDir, HubPort: e.hubPort(t),
	}
	d.writeConfig(t)
	return d
}

func (d *agentDevice) writeConfig(t testing.TB) {
	t.Helper()
	if err := os.WriteFile(d.cfgPath, []byte(d.cfg.yaml()), 0o600); err != nil {
		t.Fatal(err)
	}
}

// provision runs `dpsagent provision` to its end.
func (d *agentDevice) provision(t testing.TB, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, d.bins.dpsagent, append([]string{"provision", "--config", d.cfgPath}, args...)...)
	cmd.Env = childEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit) && ctx.Err() == nil:
	default:
		t.Fatalf("dpsagent provision: %v\nstderr:\n%s", err, errOut.String())
	}
	return cmd.ProcessState.ExitCode(), out.String(), errOut.String()
}

// mustProvision runs `dpsagent provision` and fails the test unless it
// exits 0 saying so.
func (d *agentDevice) mustProvision(t testing.TB) string {
	t.Helper()
	code, stdout, stderr := d.provision(t)
	if code != exitOK || !strings.Contains(stdout, "Provisioned") {
		t.Fatalf("dpsagent provision: exit %d, want 0 and \"Provisioned\"\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	return stdout
}

// run starts `dpsagent run`. In cleanup it is stopped with SIGTERM, and must
// exit within a few seconds with code 0.
func (d *agentDevice) run(t testing.TB) *process {
	t.Helper()
	p := startProcess(t, "dpsagent run", nil, d.bins.dpsagent, "run", "--config", d.cfgPath)
	t.Cleanup(func() {
		already := p.exited() && !p.asked.Load()
		switch {
		case !p.stop(5 * time.Second):
			t.Errorf("dpsagent run did not exit within 5s of SIGTERM")
		case already:
			t.Errorf("dpsagent run had exited by itself (%v) before the test stopped it", p.waitErr)
		case p.exitCode() != exitOK:
			t.Errorf("dpsagent run exited with %d after SIGTERM, want 0", p.exitCode())
		}
		if t.Failed() {
			t.Logf("dpsagent run output:\n%s", p.tail())
		}
	})
	return p
}

// stateManifest is the part of the state directory's manifest the tests
// read: the on-disk format, snake_case.
type stateManifest struct {
	Current *stateIdentity `json:"current"`
	Next    *stateIdentity `json:"next"`
}

type stateIdentity struct {
	KeyFile    string `json:"key_file"`
	ChainFile  string `json:"chain_file"`
	KeyStorage string `json:"key_storage"`
	DeviceID   string `json:"device_id"`
	Serial     string `json:"serial"`
	NotAfter   string `json:"not_after"`
}

// readState reads the manifest; no manifest reads as an empty one.
func (d *agentDevice) readState() (stateManifest, error) {
	var m stateManifest
	data, err := os.ReadFile(filepath.Join(d.stateDir, "state.json"))
	if errors.Is(err, os.ErrNotExist) {
		return m, nil
	}
	if err != nil {
		return m, err
	}
	return m, json.Unmarshal(data, &m)
}

func (d *agentDevice) mustCurrent(t testing.TB) *stateIdentity {
	t.Helper()
	m, err := d.readState()
	if err != nil {
		t.Fatal(err)
	}
	if m.Current == nil {
		t.Fatal("the state directory holds no current identity")
	}
	return m.Current
}

// storedChain reads an identity's chain from the state directory, leaf first.
func (d *agentDevice) storedChain(id *stateIdentity) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(filepath.Join(d.stateDir, id.ChainFile))
	if err != nil {
		return nil, err
	}
	var chain []*x509.Certificate
	for {
		var b *pem.Block
		if b, data = pem.Decode(data); b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, err
		}
		chain = append(chain, c)
	}
	if len(chain) == 0 || chain[0].IsCA {
		return nil, fmt.Errorf("%s does not start with a leaf certificate", id.ChainFile)
	}
	return chain, nil
}

// publicKeyDER is a public key in a comparable form.
func publicKeyDER(t testing.TB, pub crypto.PublicKey) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return string(der)
}

// checkStoredIdentity checks what the device will rely on after a provision:
// the current identity's chain verifies up to the emulator's device root for
// client authentication, names this device, has not expired, and is for the
// very key whose blob is stored (loaded in the TPM to compare). The TPM must
// not be in use by an agent: swtpm serves one connection at a time.
func (d *agentDevice) checkStoredIdentity(t testing.TB, e *emulator, tpmSpec string) {
	t.Helper()
	cur := d.mustCurrent(t)
	chain, err := d.storedChain(cur)
	if err != nil {
		t.Fatal(err)
	}
	leaf := chain[0]
	rootPEM, err := os.ReadFile(e.ep.DeviceRootFile)
	if err != nil {
		t.Fatal(err)
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	if !roots.AppendCertsFromPEM(rootPEM) {
		t.Fatalf("%s holds no certificate", e.ep.DeviceRootFile)
	}
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("the stored chain does not verify up to the emulator's device root: %v", err)
	}
	if leaf.Subject.CommonName != d.regID {
		t.Errorf("the stored certificate is for %q, want %q", leaf.Subject.CommonName, d.regID)
	}
	if !strings.EqualFold(leaf.SerialNumber.Text(16), cur.Serial) {
		t.Errorf("the manifest says serial %s, the stored certificate has %s", cur.Serial, leaf.SerialNumber.Text(16))
	}
	blob, err := os.ReadFile(filepath.Join(d.stateDir, cur.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	tp, err := tpm.Open(tpmSpec, tpm.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	k, err := tp.LoadKey(blob)
	if err != nil {
		t.Fatalf("the stored key blob does not load in the TPM: %v", err)
	}
	if publicKeyDER(t, k.Public()) != publicKeyDER(t, leaf.PublicKey) {
		t.Error("the stored certificate is for another key than the stored TPM key")
	}
}

// checkNothingStored fails if the state directory holds an identity, or the
// files of one, after a failed provisioning.
func (d *agentDevice) checkNothingStored(t testing.TB) {
	t.Helper()
	m, err := d.readState()
	if err != nil {
		t.Fatal(err)
	}
	if m.Current != nil || m.Next != nil {
		t.Errorf("a failed provisioning left an identity in the state directory: %s", jsonText(m))
	}
	entries, _ := os.ReadDir(d.stateDir)
	for _, en := range entries {
		if strings.HasPrefix(en.Name(), "key-") || strings.HasPrefix(en.Name(), "chain-") {
			t.Errorf("a failed provisioning left %s in the state directory", en.Name())
		}
	}
}

// checkPrivate checks the state directory is private and holds no private key
// in the clear: the key is a TPM blob, useless outside that TPM.
func (d *agentDevice) checkPrivate(t testing.TB) {
	t.Helper()
	fi, err := os.Stat(d.stateDir)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o700 {
		t.Errorf("state directory has mode %04o, want 0700", perm)
	}
	entries, err := os.ReadDir(d.stateDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, en := range entries {
		path := filepath.Join(d.stateDir, en.Name())
		info, err := en.Info()
		if err != nil {
			t.Fatal(err)
		}
		if !info.Mode().IsRegular() {
			t.Errorf("%s in the state directory is not a regular file (%s)", en.Name(), info.Mode())
			continue
		}
		if perm := info.Mode().Perm(); perm != 0o600 {
			t.Errorf("%s has mode %04o, want 0600", en.Name(), perm)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(data, []byte("PRIVATE KEY")) {
			t.Errorf("%s holds a PEM private key", en.Name())
		}
		if strings.HasPrefix(en.Name(), "key-") {
			if _, err := x509.ParsePKCS8PrivateKey(data); err == nil {
				t.Errorf("%s is a plain PKCS#8 private key", en.Name())
			}
			if _, err := x509.ParseECPrivateKey(data); err == nil {
				t.Errorf("%s is a plain EC private key", en.Name())
			}
		}
	}
}

// waitStored waits until the state directory's current identity is the
// certificate the hub sees (the agent commits right after the hub accepts
// it) and returns it with its chain.
func (d *agentDevice) waitStored(t testing.TB, agent *process, serial string) (*stateIdentity, []*x509.Certificate) {
	t.Helper()
	type stored struct {
		ID    *stateIdentity
		Chain []*x509.Certificate `json:"-"`
		Err   string
	}
	s := eventually(t, 10*time.Second, "the state directory to hold certificate "+serial, agent, func() (stored, bool) {
		m, err := d.readState()
		if err != nil || m.Current == nil || !strings.EqualFold(m.Current.Serial, serial) {
			return stored{ID: m.Current, Err: fmt.Sprint(err)}, false
		}
		chain, err := d.storedChain(m.Current)
		return stored{ID: m.Current, Chain: chain, Err: fmt.Sprint(err)}, err == nil
	})
	return s.ID, s.Chain
}
