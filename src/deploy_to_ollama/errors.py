"""The one exception hierarchy of deploy-to-ollama.

Every condition a user can fix has its own class carrying a one-line message, a ``hint``
that says what to do, and a class-level ``exit_code``. Only the CLI turns them into text.
"""

from __future__ import annotations

from pathlib import Path


class DeployError(Exception):
    """Root of every error this package raises on purpose."""

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class InputError(DeployError):
    """The input (path, flag, file content) is unusable as given."""


class InputNotFoundError(InputError, FileNotFoundError):
    """A file or directory the user named does not exist."""

    def __init__(self, message: str, *, path: Path | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.path = path


class UsageError(InputError):
    """Flags that contradict each other or name unknown values (exit 2, as for click's own)."""

    exit_code = 2


class InvalidModelNameError(UsageError):
    """A model name Ollama would refuse: a bad input value (exit 1), not a flag mistake.

    It stays a ``UsageError`` for callers that caught it as one before the classes split.
    """

    exit_code = 1


class InvalidHostError(UsageError):
    """``--host`` / ``OLLAMA_HOST`` is not an address (a usage error, exit 2)."""

    exit_code = 2


class ModelNotFoundError(InputError, LookupError):
    """The Ollama server has no model of that name (bad input, exit 1; not a failed check)."""

    def __init__(
        self, message: str, *, model: str, host: str | None = None, hint: str | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.model = model
        self.host = host


class OutputExistsError(InputError, FileExistsError):
    """The output already exists and ``--force`` was not given."""


class ReplaceRefusedError(UsageError, OutputExistsError):
    """An existing Ollama model would be replaced and neither ``--force`` nor a new name was given.

    Exit 1 like every other "already exists" refusal; also a ``UsageError`` for older callers.
    """

    exit_code = 1


class BaseModelNotFoundError(InputError):
    """The base model of an adapter cannot be found locally or in the HF cache."""


class AdapterBaseMismatchError(InputError):
    """A LoRA adapter was trained on another base than the Ollama model it would run on."""


class AdapterNotConvertibleError(InputError):
    """The adapter holds full weights (embeddings, lm_head) that a GGUF LoRA cannot carry."""


class AdapterRouteUnavailableError(InputError):
    """The Ollama server no longer registers ``ADAPTER`` models (``--mode adapter``)."""


class MergeError(DeployError):
    """Merging a LoRA adapter into its base failed or is not supported."""


class ConversionError(DeployError):
    """llama.cpp conversion or quantization failed."""

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        command: list[str] | None = None,
        stderr_tail: str = "",
    ) -> None:
        super().__init__(message, hint=hint)
        self.command = command or []
        self.stderr_tail = stderr_tail
        self.in_process_quantization = False
        """True when in-process quantization broke (not the weights): llama-quantize may work."""


class InvalidWeightsError(ConversionError):
    """The weights cannot be quantized (NaN or inf): no quantizer will do better."""


class DiskSpaceError(DeployError, OSError):
    """Not enough free disk space for the planned output."""


class DependencyMissingError(DeployError):
    """A tool we need (llama.cpp, ollama, CUDA/Unsloth) is not installed."""

    exit_code = 4


class TemplateError(DeployError):
    """Reading or parsing a chat template failed."""


class TemplateNotFoundError(TemplateError, InputNotFoundError):
    """No chat template could be found in the given source."""


class TemplateSyntaxError(TemplateError):
    """A Jinja or Go template does not parse."""

    def __init__(
        self,
        message: str,
        *,
        line: int | None = None,
        column: int | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.line = line
        self.column = column


class TemplateRenderError(TemplateError):
    """A template raised or reached for something forbidden while rendering."""


class TemplateTranslationError(TemplateError):
    """The Jinja template could not be turned into an Ollama TEMPLATE."""


class TemplateMismatchError(DeployError):
    """The Ollama TEMPLATE renders a different prompt than the Jinja template."""

    exit_code = 3


class ModelfileError(DeployError):
    """A Modelfile does not parse, or a value cannot be written so Ollama's parser keeps it."""

    def __init__(self, message: str, *, line: int | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.line = line


class OllamaUnavailableError(DeployError, ConnectionError):
    """The Ollama server cannot be reached."""

    exit_code = 4

    def __init__(self, message: str, *, host: str | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.host = host


class NotOllamaServerError(OllamaUnavailableError):
    """Something answers HTTP at the host, but it is not an Ollama server."""


class RegistrationError(DeployError):
    """``ollama create`` (CLI or API) failed."""


class RegistryError(DeployError):
    """An Ollama registry refused a push or pull (HTTP 401, 404, 500, a bad manifest)."""


class RegistryUnavailableError(RegistryError, ConnectionError):
    """Nothing answers at the registry's address (exit 4, like any unreachable dependency)."""

    exit_code = 4


class RoundTripError(DeployError):
    """The registered model failed its round-trip check."""

    exit_code = 3


class RunInterruptedError(DeployError):
    """The user pressed Ctrl-C; the CLI raises it so the interrupt is reported like any error.

    Outputs are written to temp names and moved into place, so nothing half-written remains.
    """

    exit_code = 130


class HubError(DeployError):
    """Publishing to the Hugging Face Hub failed."""


class HubUnavailableError(HubError, ConnectionError):
    """The Hugging Face Hub (or HF_ENDPOINT) cannot be reached."""

    exit_code = 4
