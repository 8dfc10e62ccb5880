// See login_command.h. The password comes from stdin (--password-stdin) or
// from the terminal with echo off; it never is an argument (it would show in
// `ps`) and never reaches a log line or a message.
#include "fs/cli/login_command.h"

#include <termios.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <string>

#include "fs/cli/options.h"
#include "registry/core/error.h"
#include "registry/core/log.h"
#include "registry/credentials.h"
#include "registry/login.h"
#include "registry/reference.h"

namespace regfs::fs {

const char* const kLoginUsage =
    "Usage: regfs login [OPTIONS] REGISTRY\n"
    "\n"
    "Checks a username and password against REGISTRY (host[:port], e.g. ghcr.io,\n"
    "docker.io, localhost:5000), then saves them where docker keeps them:\n"
    "$DOCKER_CONFIG/config.json or ~/.docker/config.json (mode 0600), or the\n"
    "credential helper that file names (credHelpers, credsStore). regfs mount,\n"
    "docker, podman and skopeo all read them from there.\n"
    "\n"
    "Options:\n"
    "  -u, --username USER    the user (asked for when not given)\n"
    "  --password-stdin       read the password from stdin (else it is asked\n"
    "                         for on the terminal, without echo)\n"
    "  --auth-file FILE       save in FILE instead (docker config.json format)\n"
    "  --insecure             allow plain HTTP / unverified TLS for REGISTRY\n"
    "  --ca-cert FILE         extra CA certificate to trust\n"
    "  -d, --debug            log every request (never a secret)\n"
    "\n"
    "Example: echo \"$TOKEN\" | regfs login ghcr.io -u me --password-stdin\n";

const char* const kLogoutUsage =
    "Usage: regfs logout [--auth-file FILE] REGISTRY\n"
    "\n"
    "Removes the credentials `regfs login` (or docker login) saved for REGISTRY:\n"
    "its entries in $DOCKER_CONFIG/config.json or ~/.docker/config.json (or\n"
    "--auth-file FILE), and its copy in the credential helper that file names.\n";

namespace {

struct LoginArgs {
  std::string registry;
  std::string username;
  bool password_stdin = false;
  std::string auth_file;
  bool insecure = false;
  std::string ca_cert;
  bool debug = false;
};

int fail(const std::string& message) {
  std::fprintf(stderr, "regfs: %s\n", message.c_str());
  return 1;
}

bool wants_help(const std::vector<std::string>& args) {
  for (const auto& a : args) {
    if (a == "--help" || a == "-h") return true;
  }
  return false;
}

// "https://ghcr.io/", "GHCR.io" -> "ghcr.io"; throws UsageError.
std::string registry_argument(const std::string& text) {
  std::string name = registry::normalise_credential_key(text);
  if (name.empty() || name.find('/') != std::string::npos ||
      name.find_first_of(" \t@") != std::string::npos) {
    throw UsageError("invalid registry '" + text + "': expected a host with an optional port");
  }
  return name;
}

LoginArgs parse_login_args(const std::vector<std::string>& args, bool logout) {
  LoginArgs out;
  std::vector<std::string> positional;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string arg = args[i];
    std::string value;
    bool has_value = false;
    if (arg.starts_with("--") && arg.find('=') != std::string::npos) {
      value = arg.substr(arg.find('=') + 1);
      arg = arg.substr(0, arg.find('='));
      has_value = true;
    }
    auto next = [&]() -> std::string {
      if (has_value) return value;
      if (i + 1 >= args.size()) throw UsageError("option " + arg + " needs a value");
      return args[++i];
    };
    if (arg == "--auth-file") {
      out.auth_file = next();
    } else if (!logout && (arg == "-u" || arg == "--username")) {
      out.username = next();
    } else if (!logout && arg == "--password-stdin") {
      out.password_stdin = true;
    } else if (!logout && (arg == "-p" || arg == "--password")) {
      throw UsageError("a password on the command line shows in `ps`: use --password-stdin");
    } else if (!logout && arg == "--insecure") {
      out.insecure = true;
    } else if (!logout && arg == "--ca-cert") {
      out.ca_cert = next();
    } else if (arg == "-d" || arg == "--debug") {
      out.debug = true;
    } else if (arg.size() > 1 && arg[0] == '-') {
      throw UsageError("unknown option " + arg + " (see regfs " + (logout ? "logout" : "login") +
                       " --help)");
    } else {
      positional.push_back(arg);
    }
  }
  if (positional.size() != 1) {
    throw UsageError(std::string("expected one REGISTRY (see regfs ") +
                     (logout ? "logout" : "login") + " --help)");
  }
  out.registry = registry_argument(positional[0]);
  if (out.password_stdin && out.username.empty()) {
    throw UsageError("--password-stdin needs --username");
  }
  return out;
}

// A line from the terminal; with echo off when `secret`.
std::string prompt(const char* text, bool secret) {
  std::fputs(text, stderr);
  std::fflush(stderr);
  termios saved{};
  bool restore = false;
  if (secret && ::tcgetattr(STDIN_FILENO, &saved) == 0) {
    termios quiet = saved;
    quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
    quiet.c_lflag |= ECHONL;
    restore = ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet) == 0;
  }
  std::string line;
  bool got = static_cast<bool>(std::getline(std::cin, line));
  if (restore) ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved);
  if (!got) throw UsageError("Cannot read from the terminal: end of input");
  if (!line.empty() && line.back() == '\r') line.pop_back();
  return line;
}

// Everything on stdin, without the trailing newline.
std::string read_stdin() {
  std::string all((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
  while (!all.empty() && (all.back() == '\n' || all.back() == '\r')) all.pop_back();
  return all;
}

registry::Credential ask_credential(LoginArgs& args) {
  bool terminal = ::isatty(STDIN_FILENO);
  if (args.username.empty()) {
    if (!terminal) throw UsageError("no --username and stdin is not a terminal");
    args.username = prompt("Username: ", false);
  }
  registry::Credential credential;
  credential.username = args.username;
  if (args.password_stdin) {
    credential.password = read_stdin();
  } else {
    if (!terminal) throw UsageError("stdin is not a terminal: use --password-stdin");
    credential.password = prompt("Password: ", true);
  }
  if (credential.username.empty() || credential.password.empty()) {
    throw UsageError("a username and a password are needed");
  }
  return credential;
}

}  // namespace

int run_login(const std::vector<std::string>& args) {
  if (wants_help(args)) {
    std::fputs(kLoginUsage, stdout);
    return 0;
  }
  LoginArgs parsed;
  registry::Credential credential;
  std::string file;
  try {
    parsed = parse_login_args(args, /*logout=*/false);
    if (parsed.debug) log::set_level(log::kDebug);
    if (!parsed.ca_cert.empty()) {
      parsed.ca_cert = std::filesystem::absolute(parsed.ca_cert).string();
    }
    file = registry::login_file(parsed.auth_file);
    credential = ask_credential(parsed);
  } catch (const std::exception& e) {
    return fail(e.what());
  }
  registry::ClientOptions options;
  options.registry = parsed.registry;
  options.insecure = parsed.insecure;
  options.ca_cert = parsed.ca_cert;
  try {
    registry::verify_login(options, credential);
    std::string where = registry::save_login(file, parsed.registry, credential);
    std::fprintf(stderr, "regfs: logged in to %s (credentials saved in %s)\n",
                 parsed.registry.c_str(), where.c_str());
    std::puts("Login Succeeded");
    return 0;
  } catch (const std::exception& e) {
    return fail(e.what());
  }
}

int run_logout(const std::vector<std::string>& args) {
  if (wants_help(args)) {
    std::fputs(kLogoutUsage, stdout);
    return 0;
  }
  try {
    LoginArgs parsed = parse_login_args(args, /*logout=*/true);
    if (parsed.debug) log::set_level(log::kDebug);
    std::string file = registry::login_file(parsed.auth_file);
    if (!registry::remove_login(file, parsed.registry)) {
      std::fprintf(stderr, "regfs: not logged in to %s (nothing in %s)\n", parsed.registry.c_str(),
                   file.c_str());
      return 0;
    }
    std::fprintf(stderr, "regfs: removed the credentials for %s from %s\n", parsed.registry.c_str(),
                 file.c_str());
    return 0;
  } catch (const std::exception& e) {
    return fail(e.what());
  }
}

}  // namespace regfs::fs
