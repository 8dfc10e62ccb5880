// `regfs login` and `regfs logout` (SPEC §1, §6): the command line and the
// terminal (prompts, a password read without echo); registry/login.h does
// the checking and saving.
#pragma once

#include <string>
#include <vector>

namespace regfs::fs {

// The help texts, for `regfs login --help` and the man page.
extern const char* const kLoginUsage;
extern const char* const kLogoutUsage;

// `regfs login REGISTRY [-u USER] [--password-stdin] [--auth-file FILE]
// [--insecure] [--ca-cert FILE] [-d]`, the arguments after "login". Returns
// the exit code.
int run_login(const std::vector<std::string>& args);
// `regfs logout REGISTRY [--auth-file FILE]`.
int run_logout(const std::vector<std::string>& args);

}  // namespace regfs::fs
