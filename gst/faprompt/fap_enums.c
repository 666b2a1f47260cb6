/* See fap_enums.h. */
#include "fap_enums.h"

GType
gst_fa_prompt_backend_get_type (void)
{
  static GType type = 0;
  static const GEnumValue values[] = {
    {GST_FA_PROMPT_BACKEND_AUTO, "CUDA when built and a device is present, "
          "else CPU", "auto"},
    {GST_FA_PROMPT_BACKEND_CPU, "CPU (OpenBLAS + OpenMP)", "cpu"},
    {GST_FA_PROMPT_BACKEND_CUDA, "CUDA (fails to start where not built)",
        "cuda"},
    {0, NULL, NULL},
  };
  if (g_once_init_enter (&type)) {
    GType t = g_enum_register_static ("GstFAPromptBackend", values);
    g_once_init_leave (&type, t);
  }
  return type;
}

GType
gst_fa_prompt_precision_get_type (void)
{
  static GType type = 0;
  static const GEnumValue values[] = {
    {GST_FA_PROMPT_PRECISION_AUTO, "The backend's default: CPU bf16 where it "
          "has AVX512-BF16 or AMX, else f32; CUDA f16", "auto"},
    {GST_FA_PROMPT_PRECISION_F32, "f32 (CPU, exact; CUDA fails to start)",
        "f32"},
    {GST_FA_PROMPT_PRECISION_F16, "f16 (CUDA; the CPU computes f32)", "f16"},
    {GST_FA_PROMPT_PRECISION_BF16, "bf16 (CUDA; CPU where it has AVX512-BF16 "
          "or AMX, else f32)", "bf16"},
    {GST_FA_PROMPT_PRECISION_INT8, "int8 (CPU, experimental: beyond the "
          "accuracy bounds, computes f32 unless FAP_CPU_INT8=experimental; "
          "CUDA fails to start)", "int8"},
    {0, NULL, NULL},
  };
  if (g_once_init_enter (&type)) {
    GType t = g_enum_register_static ("GstFAPromptPrecision", values);
    g_once_init_leave (&type, t);
  }
  return type;
}

GType
gst_fa_prompt_messages_get_type (void)
{
  static GType type = 0;
  static const GEnumValue values[] = {
    {GST_FA_PROMPT_MESSAGES_NONE, "Post no messages", "none"},
    {GST_FA_PROMPT_MESSAGES_EVERY_FRAME, "One message per frame carrying a "
          "result", "every-frame"},
    {GST_FA_PROMPT_MESSAGES_ON_CHANGE, "One message when the anomalous "
          "decision flips (event=anomaly-started / anomaly-ended)",
        "on-change"},
    {GST_FA_PROMPT_MESSAGES_ANOMALOUS, "One message per anomalous frame",
        "anomalous"},
    {0, NULL, NULL},
  };
  if (g_once_init_enter (&type)) {
    GType t = g_enum_register_static ("GstFAPromptMessages", values);
    g_once_init_leave (&type, t);
  }
  return type;
}

GType
gst_fa_prompt_non_blocking_get_type (void)
{
  static GType type = 0;
  static const GEnumValue values[] = {
    {GST_FA_PROMPT_NON_BLOCKING_FALSE, "Blocking: a frame that is due waits "
          "for its own inference (every due frame scored; the stream runs at "
          "the model's speed)", "false"},
    {GST_FA_PROMPT_NON_BLOCKING_TRUE, "Non-blocking: inference on a worker "
          "thread, no frame waits; frames carry the newest finished result "
          "(reused), due frames are skipped while the worker is busy", "true"},
    {GST_FA_PROMPT_NON_BLOCKING_AUTO, "Non-blocking when upstream is live "
          "(LATENCY query), blocking otherwise (files, tests)", "auto"},
    {0, NULL, NULL},
  };
  if (g_once_init_enter (&type)) {
    GType t = g_enum_register_static ("GstFAPromptNonBlocking", values);
    g_once_init_leave (&type, t);
  }
  return type;
}
