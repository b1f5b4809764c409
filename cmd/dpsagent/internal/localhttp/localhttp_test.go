package localhttp

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// serve starts a server with a status and a renew route on a unix socket,
// as the daemon does; it returns the socket's path.
func serve(t *testing.T, timeout time.Duration) (string, *Server) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "api.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	var logged atomic.Int32
	s := New(func(string, ...any) { logged.Add(1) })
	if timeout > 0 {
		s.SetTimeout(timeout)
	}
	s.Handle("GET", "/v1/status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"state":"connected"}`+"\n")
	})
	s.Handle("POST", "/v1/renew", func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusAccepted)
	})
	done := make(chan error, 1)
	go func() { done <- s.Serve(l) }()
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("Serve after Close = %v, want nil", err)
		}
	})
	return path, s
}

func unixDial(path string) func(context.Context) (net.Conn, error) {
	return func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}
}

// stdClient is net/http's own client: the independent judge of the server.
func stdClient(path string) *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) { return unixDial(path)(ctx) },
	}}
}

func TestServerAnswersNetHTTPClient(t *testing.T) {
	path, _ := serve(t, 0)
	c := stdClient(path)
	defer c.CloseIdleConnections()
	for _, tc := range []struct {
		method, path string
		status       int
		body, ctype  string
		allow        string
	}{
		{"GET", "/v1/status", 200, `{"state":"connected"}` + "\n", "application/json", ""},
		{"HEAD", "/v1/status", 200, "", "application/json", ""},
		{"POST", "/v1/renew", 202, "", "", ""},
		{"GET", "/v1/renew", 405, "GET is not allowed here; use POST\n", "text/plain; charset=utf-8", "POST"},
		{"DELETE", "/v1/status", 405, "DELETE is not allowed here; use GET\n", "text/plain; charset=utf-8", "GET"},
		{"GET", "/nope", 404, "no such path: /nope\n", "text/plain; charset=utf-8", ""},
	} {
		req, err := http.NewRequest(tc.method, "http://dpsagent"+tc.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", tc.method, tc.path, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != tc.status || string(body) != tc.body || resp.Header.Get("Content-Type") != tc.ctype ||
			resp.Header.Get("Allow") != tc.allow {
			t.Errorf("%s %s = %d %q, Content-Type %q, Allow %q; want %d %q, %q, %q", tc.method, tc.path,
				resp.StatusCode, body, resp.Header.Get("Content-Type"), resp.Header.Get("Allow"), tc.status, tc.body, tc.ctype, tc.allow)
		}
		if tc.method != "HEAD" && resp.ContentLength != int64(len(tc.body)) {
			t.Errorf("%s %s: Content-Length %d, want %d", tc.method, tc.path, resp.ContentLength, len(tc.body))
		}
		if !resp.Close {
			t.Errorf("%s %s: the answer does not say Connection: close", tc.method, tc.path)
		}
	}
}

func TestDo(t *testing.T) {
	path, _ := serve(t, 0)
	resp, err := Do(context.Background(), unixDial(path), "GET", "/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || string(resp.Body) != `{"state":"connected"}`+"\n" || resp.Header.Get("Content-Type") != "application/json" {
		t.Errorf("Do = %+v", resp)
	}
	resp, err = Do(context.Background(), unixDial(path), "POST", "/v1/renew")
	if err != nil || resp.StatusCode != 202 || resp.Status != "202 Accepted" {
		t.Errorf("POST = %+v, %v", resp, err)
	}
	if _, err := Do(context.Background(), unixDial(filepath.Join(t.TempDir(), "none.sock")), "GET", "/"); err == nil {
		t.Error("Do on a missing socket: no error")
	}
}

// rawExchange sends raw bytes and returns what came back before the server
// closed the connection.
func rawExchange(t *testing.T, path string, send []byte) string {
	t.Helper()
	conn, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	go func() { _, _ = conn.Write(send) }()
	got, _ := io.ReadAll(conn)
	return string(got)
}

func TestServerRefusesBadRequests(t *testing.T) {
	path, _ := serve(t, 0)
	for _, tc := range []struct {
		name string
		send []byte
		want string
	}{
		{"not HTTP", []byte("HELLO THERE\r\n\r\n"), "HTTP/1.1 400 Bad Request\r\n"},
		{"bad header", []byte("GET /v1/status HTTP/1.1\r\nHost localhost\r\n\r\n"), "HTTP/1.1 400 Bad Request\r\n"},
		{"headers without end", append([]byte("GET /v1/status HTTP/1.1\r\nX: "), bytes.Repeat([]byte("a"), 2*MaxRequestBytes)...),
			"HTTP/1.1 431 Request Header Fields Too Large\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := rawExchange(t, path, tc.send); !strings.HasPrefix(got, tc.want) || !strings.Contains(got, "Connection: close\r\n") {
				t.Errorf("answer %q, want it to start %q and close", got, tc.want)
			}
		})
	}
	// The server goes on answering.
	if resp, err := Do(context.Background(), unixDial(path), "GET", "/v1/status"); err != nil || resp.StatusCode != 200 {
		t.Errorf("after the bad requests: %+v, %v", resp, err)
	}
}

// A client that connects and says nothing is cut off at the deadline, and
// does not keep others waiting meanwhile.
func TestServerCutsOffSilentClients(t *testing.T) {
	path, _ := serve(t, 300*time.Millisecond)
	var silent []net.Conn
	for range MaxConns - 1 {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		silent = append(silent, c)
	}
	if resp, err := Do(context.Background(), unixDial(path), "GET", "/v1/status"); err != nil || resp.StatusCode != 200 {
		t.Errorf("beside %d silent clients: %+v, %v", len(silent), resp, err)
	}
	for _, c := range silent {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := c.Read(make([]byte, 1))
		if n != 0 || err != io.EOF {
			t.Errorf("a silent client read %d bytes, %v; want the server to close it (EOF)", n, err)
		}
		c.Close()
	}
}

// A request body is read away before the answer, so closing does not reset
// the connection before the client has the answer.
func TestServerReadsAwayABody(t *testing.T) {
	path, _ := serve(t, 0)
	body := strings.Repeat("x", 32<<10)
	got := rawExchange(t, path, []byte("POST /v1/renew HTTP/1.1\r\nHost: localhost\r\nContent-Length: 32768\r\n\r\n"+body))
	if !strings.HasPrefix(got, "HTTP/1.1 202 Accepted\r\n") {
		t.Errorf("answer %q", got)
	}
}

func TestDoTimesOut(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mute.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := Do(ctx, unixDial(path), "GET", "/v1/status"); err == nil {
		t.Error("a server that never answers: no error")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Do took %v past a 200ms context", d)
	}
	(<-accepted).Close()
}

func TestServeAfterClose(t *testing.T) {
	s := New(nil)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("unix", filepath.Join(t.TempDir(), "s.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := s.Serve(l); err != ErrClosed {
		t.Errorf("Serve after Close = %v, want ErrClosed", err)
	}
}

// FuzzServeConn: whatever a client sends, the server answers with an HTTP
// status line or closes quietly, and never panics.
func FuzzServeConn(f *testing.F) {
	for _, seed := range []string{
		"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n",
		"HEAD /v1/status HTTP/1.0\r\n\r\n",
		"POST /v1/renew HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
		"POST /v1/renew HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
		"GET /%zz HTTP/1.1\r\n\r\n",
		"GET http://other/v1/status HTTP/1.1\r\n\r\n",
		"\r\n\r\n",
	} {
		f.Add([]byte(seed))
	}
	s := New(nil)
	s.Handle("GET", "/v1/status", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "{}") })
	s.Handle("POST", "/v1/renew", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusAccepted) })
	f.Fuzz(func(t *testing.T, data []byte) {
		c := &recordingConn{in: bytes.NewReader(data)}
		s.ServeConn(c)
		if got := c.out.Bytes(); len(got) > 0 && !bytes.HasPrefix(got, []byte("HTTP/1.1 ")) {
			t.Fatalf("answer %q does not start with a status line", got)
		}
		if !c.closed {
			t.Fatal("the connection was left open")
		}
	})
}

// recordingConn is a connection whose client sent in and then stopped
// sending; it keeps what the server wrote.
type recordingConn struct {
	net.Conn // the methods the server must not use panic
	in       *bytes.Reader
	out      bytes.Buffer
	closed   bool
}

func (c *recordingConn) Read(p []byte) (int, error)  { return c.in.Read(p) }
func (c *recordingConn) Write(p []byte) (int, error) { return c.out.Write(p) }
func (c *recordingConn) Close() error                { c.closed = true; return nil }
func (c *recordingConn) SetDeadline(time.Time) error { return nil }
func (c *recordingConn) RemoteAddr() net.Addr        { return &net.UnixAddr{Net: "unix"} }
