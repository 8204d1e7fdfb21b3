#include "core/process_info.h"

#include <unistd.h>

#include <cstdlib>
#include <ctime>

namespace chorus {

namespace {

std::string g_command_line;

// 'arg' with single quotes when it holds anything a shell would interpret.
std::string shell_quote(const std::string& arg) {
  if (!arg.empty() && arg.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
                                            "@%+=:,./-_") == std::string::npos)
    return arg;
  std::string out = "'";
  for (char c : arg) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

}  // namespace

void record_command_line(int argc, char** argv) {
  g_command_line.clear();
  for (int i = 0; i < argc; ++i) {
    if (i > 0) g_command_line += ' ';
    g_command_line += shell_quote(argv[i]);
  }
}

const std::string& command_line() { return g_command_line; }

std::string host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0 || buf[0] == '\0') return "unknown";
  return buf;
}

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

nlohmann::json slurm_job() {
  nlohmann::json j;
  const std::pair<const char*, const char*> vars[] = {{"job_id", "SLURM_JOB_ID"},
                                                      {"restart_count", "SLURM_RESTART_COUNT"},
                                                      {"array_job_id", "SLURM_ARRAY_JOB_ID"},
                                                      {"array_task_id", "SLURM_ARRAY_TASK_ID"}};
  for (const auto& [key, var] : vars)
    if (const char* v = std::getenv(var)) j[key] = v;
  return j;
}

}  // namespace chorus
