package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"text/template"
	"time"

	"github.com/edgegate/edgegate/internal/gatewayproc"
)

// server is an nginx or haproxy process run from a template in bench/. It
// runs in its own process group, so its CPU and memory are the sum over that
// group (nginx's master and workers).
type server struct {
	kind   string // "nginx" or "haproxy"
	dir    string // config, pid file, logs
	tmpl   string // template path
	listen string // 127.0.0.1:port, picked at each start

	cmd  *exec.Cmd
	out  bytes.Buffer
	done chan struct{}
}

// tmplData is what the templates see.
type tmplData struct {
	Dir    string
	Listen string
	Pods   []string // ip:port
	Hosts  []string
}

func (s *server) start(ctx context.Context, pods, hosts []string) error {
	if err := os.RemoveAll(s.dir); err != nil {
		return err
	}
	if err := os.MkdirAll(s.dir, 0o755); err != nil {
		return err
	}
	s.listen = gatewayproc.FreeAddr()
	t, err := template.ParseFiles(s.tmpl)
	if err != nil {
		return err
	}
	var cfg bytes.Buffer
	if err := t.Execute(&cfg, tmplData{Dir: s.dir, Listen: s.listen, Pods: pods, Hosts: hosts}); err != nil {
		return fmt.Errorf("%s template: %w", s.kind, err)
	}
	var args []string
	switch s.kind {
	case "nginx":
		path := filepath.Join(s.dir, "nginx.conf")
		if err := os.WriteFile(path, cfg.Bytes(), 0o644); err != nil {
			return err
		}
		args = []string{"nginx", "-p", s.dir, "-c", path, "-e", filepath.Join(s.dir, "error.log"), "-g", "daemon off;"}
	case "haproxy":
		var m strings.Builder
		for _, h := range hosts {
			m.WriteString(h + " pods\n")
		}
		if err := os.WriteFile(filepath.Join(s.dir, "hosts.map"), []byte(m.String()), 0o644); err != nil {
			return err
		}
		path := filepath.Join(s.dir, "haproxy.cfg")
		if err := os.WriteFile(path, cfg.Bytes(), 0o644); err != nil {
			return err
		}
		args = []string{"haproxy", "-f", path, "-db"}
	default:
		return fmt.Errorf("unknown server kind %q", s.kind)
	}
	s.out.Reset()
	s.done = make(chan struct{})
	s.cmd = exec.Command(args[0], args[1:]...)
	s.cmd.Stdout, s.cmd.Stderr = &s.out, &s.out
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", s.kind, err)
	}
	go func() { _ = s.cmd.Wait(); close(s.done) }()

	c := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(15 * time.Second)
	for {
		select {
		case <-s.done:
			return fmt.Errorf("%s exited at start: %s%s", s.kind, s.out.String(), s.errorLog())
		default:
		}
		if code, _, err := get(ctx, c, s.listen, hosts[0], "/small"); err == nil && code == http.StatusOK {
			return nil
		}
		if time.Now().After(deadline) {
			s.stop()
			return fmt.Errorf("%s not answering on %s after 15s: %s%s", s.kind, s.listen, s.out.String(), s.errorLog())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *server) errorLog() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "error.log"))
	return string(b)
}

// pids are the processes of the server's group (the group we created).
func (s *server) pids() []int {
	if s.cmd == nil || s.cmd.Process == nil {
		return nil
	}
	return groupPIDs(s.cmd.Process.Pid)
}

// stop sends SIGTERM to the server's process group and SIGKILL after 5 s.
// Safe to call when not running.
func (s *server) stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	select {
	case <-s.done:
		return
	default:
	}
	pgid := s.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-s.done
	}
}
