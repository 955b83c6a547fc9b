"""SmoothGuardRunnable: guard any runnable whose input carries images or audio (a model, a chain, a binding).

>>> chain = prompt | SmoothGuardRunnable(bound=llm, n_samples=11) | StrOutputParser()
>>> guarded = SmoothGuardRunnable(bound=prompt | llm | StrOutputParser())   # the prompt's {image} is smoothed

The input (messages, a ``ChatPromptValue``, or a dict holding them or raw media: :mod:`smoothguard_langchain.inputs`)
is copied ``n_samples`` times with noisy media, ``bound.batch`` / ``bound.abatch`` answers every copy concurrently
(each a child run tagged ``smoothguard:sample:<i>``), and the representative output is returned as ``bound``
produced it. A message output carries
``response_metadata["smoothguard"] = GuardResult.to_dict()``; every request also emits the custom event
``"smoothguard_result"`` (collect it with :class:`~smoothguard_langchain.SmoothGuardResults`), which is how the
metadata reaches you when the output is a plain string. ``stream`` / ``astream`` yield the chosen output as one
chunk: the vote needs every candidate's whole answer.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForChainRun, CallbackManagerForChainRun
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.runnables import Runnable, RunnableConfig, RunnableSerializable
from langchain_core.runnables.config import patch_config
from pydantic import BaseModel, ConfigDict, Field

from smoothguard import GuardResult
from smoothguard.errors import GuardFlagged
from smoothguard.fanout import FanOut
from smoothguard_langchain.blocks import image_fit
from smoothguard_langchain.callbacks import child_manager
from smoothguard_langchain.candidates import annotate_message, arun_batch, run_batch
from smoothguard_langchain.inputs import find_input_media, template_media_keys
from smoothguard_langchain.settings import GuardSettings

__all__ = ["SmoothGuardRunnable"]


class SmoothGuardRunnable(GuardSettings, RunnableSerializable[Any, Any]):
    """Runs ``bound`` on noisy copies of the input's media and returns the output the copies agree on.

    Fields: ``bound`` (any runnable), ``media_keys`` (dict keys of the input holding raw media, each ``"image"``
    or ``"audio"``; added to the variables of the media slots of ``bound``'s prompt templates, which are found
    without being declared, see :func:`~smoothguard_langchain.inputs.template_media_keys`), and every
    :class:`smoothguard.GuardConfig` setting (invalid values raise ``ConfigError``).
    Outputs are compared as text: messages by content (or tool-call JSON), strings as they are, pydantic models
    and dicts as canonical JSON. Under ``on_flag="refuse"`` a message output becomes an ``AIMessage`` and a
    string output the refusal text; other output types cannot carry a refusal, so they raise ``GuardFlagged``.
    """

    bound: Runnable[Any, Any] = Field(description="The runnable to guard.")
    media_keys: dict[str, Literal["image", "audio"]] = Field(
        default_factory=dict, description="Input dict keys holding raw media (data URL, base64, bytes, URL).")

    model_config = ConfigDict(arbitrary_types_allowed=True)

    # -- typing -------------------------------------------------------------------------------------------

    @property
    def InputType(self) -> Any:
        return self.bound.InputType

    @property
    def OutputType(self) -> Any:
        return self.bound.OutputType

    def get_input_schema(self, config: RunnableConfig | None = None) -> type[BaseModel]:
        return self.bound.get_input_schema(config)

    def get_output_schema(self, config: RunnableConfig | None = None) -> type[BaseModel]:
        return self.bound.get_output_schema(config)

    @property
    def config_specs(self) -> list[Any]:
        return self.bound.config_specs

    # -- calls --------------------------------------------------------------------------------------------

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        return self._call_with_config(self._invoke, input, config, **kwargs)

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        return await self._acall_with_config(self._ainvoke, input, config, **kwargs)

    def _invoke(self, input: Any, run_manager: CallbackManagerForChainRun, config: RunnableConfig,
                **kwargs: Any) -> Any:
        guard = self._guard()
        found = find_input_media(input, guard.config, self._media_keys(), image_fit(guard.config, self.bound))
        result, fan = run_batch(guard, found, self.bound, run_manager,
                                lambda index: self._child_config(config, run_manager, index, False), kwargs)
        return _output(result, fan)

    async def _ainvoke(self, input: Any, run_manager: AsyncCallbackManagerForChainRun, config: RunnableConfig,
                       **kwargs: Any) -> Any:
        guard = self._guard()
        found = await asyncio.to_thread(find_input_media, input, guard.config, self._media_keys(),
                                        image_fit(guard.config, self.bound))
        result, fan = await arun_batch(guard, found, self.bound, run_manager,
                                       lambda index: self._child_config(config, run_manager, index, True), kwargs)
        return _output(result, fan)

    def _media_keys(self) -> dict[str, str]:
        """``media_keys`` over the media slots of ``bound``'s prompt templates."""
        return {**template_media_keys(self.bound), **self.media_keys}

    def _child_config(self, config: RunnableConfig, run_manager: Any, index: int, is_async: bool) -> RunnableConfig:
        # The guard sets max_concurrency itself, so a caller's batch(max_concurrency=k) never throttles the fan-out.
        return patch_config(config, callbacks=child_manager(run_manager, index, is_async=is_async),
                            max_concurrency=self.max_concurrency or self.n_samples)


def _output(result: GuardResult, fan: FanOut[Any]) -> Any:
    output = fan.chosen(result)
    if result.refused:
        if isinstance(output, BaseMessage):
            return annotate_message(AIMessage(content=result.answer), result, fan.outputs.values())
        if isinstance(output, str):
            return result.answer
        raise GuardFlagged(result)
    if isinstance(output, BaseMessage):
        return annotate_message(output, result, fan.outputs.values())
    return output
