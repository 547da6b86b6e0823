"""mmengine checkpoints load with torch.load(weights_only=True); foreign objects are refused."""
import os
import pickle

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer, MessageHub

import detkit  # noqa: F401  (enables safe resume)


def test_message_hub_state_round_trips_with_weights_only(tmp_path):
    hub = MessageHub.get_instance('detkit_test_safe_checkpoint')
    for value in (1.5, 2.5, 4.0):
        hub.update_scalar('train/loss', value)
    hub.update_info('eta', np.float64(12.5))
    path = tmp_path / 'ckpt.pth'
    torch.save(dict(message_hub=hub.state_dict(), meta=dict(epoch=3)), path)
    loaded = torch.load(path, weights_only=True)
    buffer = loaded['message_hub']['log_scalars']['train/loss']
    assert isinstance(buffer, HistoryBuffer)
    assert buffer.mean() == pytest.approx(8.0 / 3) and buffer.current() == 4.0
    assert loaded['message_hub']['runtime_info']['eta'] == 12.5


class Payload:
    """Runs a shell command when unpickled."""

    def __reduce__(self):
        return os.system, ('touch /tmp/detkit_pwned',)


def test_checkpoint_with_a_code_payload_is_refused(tmp_path):
    path = tmp_path / 'evil.pth'
    with open(path, 'wb') as f:
        torch.save(dict(state_dict={}, meta=Payload()), f)
    if os.path.exists('/tmp/detkit_pwned'):
        os.remove('/tmp/detkit_pwned')
    with pytest.raises(pickle.UnpicklingError, match='system'):
        torch.load(path, weights_only=True)
    assert not os.path.exists('/tmp/detkit_pwned')
