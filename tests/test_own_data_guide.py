"""docs/own_data.md, walked: its commands run as written on a YOLO set made from shapes."""
from __future__ import annotations

import json
import os
import os.path as osp
import re
import shlex
import shutil
import subprocess
import sys

import pytest
import torch

from detkit.datasets.synthetic import make_shapes

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
GUIDE = osp.join(REPO, 'docs', 'own_data.md')
NAMES = ('round', 'angular')   # circle -> round, every other shape -> angular


def code_blocks(kind: str) -> list[str]:
    with open(GUIDE) as f:
        return re.findall(rf'```{kind}\n(.*?)```', f.read(), flags=re.S)


def make_yolo_set(root: str, num_train: int = 8, num_val: int = 4) -> None:
    """data/pets in the Ultralytics layout, from a generated shapes set."""
    source = osp.join(root, 'source')
    make_shapes(source, num_train=num_train, num_val=num_val, min_size=128, max_size=176, seed=4,
                scene='simple')
    for split in ('train', 'val'):
        with open(osp.join(source, 'annotations', f'instances_{split}.json')) as f:
            coco = json.load(f)
        circle = next(c['id'] for c in coco['categories'] if c['name'] == 'circle')
        os.makedirs(osp.join(root, 'images', split))
        os.makedirs(osp.join(root, 'labels', split))
        for image in coco['images']:
            name = osp.basename(image['file_name'])
            shutil.copy(osp.join(source, split, name), osp.join(root, 'images', split, name))
            lines = []
            for ann in coco['annotations']:
                if ann['image_id'] != image['id'] or ann['iscrowd']:
                    continue
                x, y, w, h = ann['bbox']
                label = 0 if ann['category_id'] == circle else 1
                lines.append(f'{label} {(x + w / 2) / image["width"]:.6f} '
                             f'{(y + h / 2) / image["height"]:.6f} {w / image["width"]:.6f} '
                             f'{h / image["height"]:.6f}')
            with open(osp.join(root, 'labels', split, osp.splitext(name)[0] + '.txt'), 'w') as f:
                f.write('\n'.join(lines) + '\n')
    shutil.rmtree(source)
    with open(osp.join(root, 'data.yaml'), 'w') as f:
        f.write(f'path: .\ntrain: images/train\nval: images/val\nnames: {list(NAMES)}\n')


def run(command: str, cwd: str) -> subprocess.CompletedProcess:
    words = shlex.split(command)
    assert words[0] == 'python' and words[1].startswith('tools/'), command
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS='2')
    return subprocess.run([sys.executable, osp.join(REPO, words[1]), *words[2:]], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=900)


def test_the_own_data_guide_runs_as_written(tmp_path):
    cwd = str(tmp_path)
    make_yolo_set(osp.join(cwd, 'data', 'pets'))
    convert, steps, _ = code_blocks('bash')   # step 1 and step 3 (step 4: the next test)
    config, _ = code_blocks('python')
    done = run(convert.strip(), cwd)
    assert done.returncode == 0, done.stderr[-3000:]
    train = json.loads((tmp_path / 'data/pets/annotations/instances_train.json').read_text())
    assert [c['name'] for c in train['categories']] == list(NAMES)
    assert len(train['images']) == 8 and train['annotations']
    # the config as the guide writes it, its base found from the repository
    (tmp_path / 'my_pets.py').write_text(config.replace(
        "'configs/retinanet_r50_shapes.py'", repr(osp.join(REPO, 'configs',
                                                            'retinanet_r50_shapes.py'))))
    assert "own_data = dict(root='data/pets/', classes=('round', 'angular'))" in config
    commands = [line for line in steps.strip().splitlines() if line.strip()]
    assert len(commands) == 4
    for command in commands:
        if command.startswith('python tools/train.py'):
            # one epoch instead of seven: the guide's flow, not its schedule
            command += ' --cfg-options train_cfg.max_epochs=1'
        done = run(command.replace('epoch_7', 'epoch_1'), cwd)
        assert done.returncode == 0, (command, done.stdout[-2000:], done.stderr[-3000:])
        if 'tools/test.py' in command:
            assert 'bbox_mAP_copypaste' in done.stdout + done.stderr
    work = tmp_path / 'work_dirs' / 'my_pets'
    state = torch.load(work / 'epoch_1.pth', map_location='cpu', weights_only=False)
    # the head was sized for the two classes: 9 anchors x 2 classes
    assert state['state_dict']['bbox_head.retina_cls.weight'].shape[0] == 9 * len(NAMES)
    assert (work / 'confusion.png').is_file() and (work / 'results.json').is_file()
    demo = json.loads((work / 'demo' / 'detections.json').read_text())
    assert len(demo['images']) == 4
    assert all(d['class_name'] in NAMES for i in demo['images'] for d in i['detections'])


def test_the_guide_fine_tunes_from_converted_torchvision_weights(tmp_path):
    """Step 4 on a randomly initialised torchvision RetinaNet saved as the hub cache would hold it:
    every converted tensor loads but the classifier, which is sized for the new classes."""
    import torchvision
    cwd = str(tmp_path)
    # one batch of 2 at the config's 1333x800: the loading is tested, not the recipe
    make_yolo_set(osp.join(cwd, 'data', 'pets'), num_train=2, num_val=1)
    convert = code_blocks('bash')[0]
    done = run(convert.strip(), cwd)
    assert done.returncode == 0, done.stderr[-3000:]
    torch.manual_seed(0)
    hub = tmp_path / 'hub'
    hub.mkdir()
    torch.save(torchvision.models.detection.retinanet_resnet50_fpn(
        weights=None, weights_backbone=None).state_dict(),
        hub / 'retinanet_resnet50_fpn_coco-eeacb38b.pth')
    config, steps = code_blocks('python')[1], code_blocks('bash')[2]
    assert "_base_ = 'configs/torchvision/retinanet_r50_fpn_tv_finetune.py'" in config
    (tmp_path / 'my_pets_tv.py').write_text(config.replace(
        "'configs/torchvision/retinanet_r50_fpn_tv_finetune.py'",
        repr(osp.join(REPO, 'configs', 'torchvision', 'retinanet_r50_fpn_tv_finetune.py'))))
    commands = [line for line in steps.strip().splitlines() if line.strip()]
    assert len(commands) == 2 and commands[1] == 'python tools/train.py my_pets_tv.py'
    done = run(commands[0].replace('~/.cache/torch/hub/checkpoints/', f'{hub}/'), cwd)
    assert done.returncode == 0, done.stderr[-3000:]
    # one epoch of the 12 (one iteration), without its validation: the loading, not the schedule
    done = run(commands[1] + ' --cfg-options train_cfg.max_epochs=1 train_cfg.val_interval=2',
               cwd)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-3000:])
    log = done.stdout + done.stderr
    assert re.findall(r'size mismatch for (\S+):', log) == ['bbox_head.retina_cls.weight',
                                                          'bbox_head.retina_cls.bias']
    assert 'missing keys' not in log and 'unexpected key' not in log
    converted = torch.load(tmp_path / 'checkpoints' / 'retinanet_r50_fpn_tv.pth',
                           map_location='cpu', weights_only=False)['state_dict']
    trained = torch.load(tmp_path / 'work_dirs' / 'my_pets_tv' / 'epoch_1.pth',
                         map_location='cpu', weights_only=False)['state_dict']
    assert set(trained) == set(converted)
    assert trained['bbox_head.retina_cls.weight'].shape == (9 * len(NAMES), 256, 3, 3)
    assert converted['bbox_head.retina_cls.weight'].shape == (9 * 91, 256, 3, 3)
    # the frozen stem and first stage are the converted weights exactly; the rest trained from them
    frozen = [k for k in converted if k.startswith(('backbone.conv1.', 'backbone.bn1.',
                                                    'backbone.layer1.'))]
    # stem: conv + bn (4 tensors); layer1: 3 blocks of 3 convs and 3 bns, and a downsample
    assert len(frozen) == 5 + 3 * (3 + 3 * 4) + 5
    assert all(torch.equal(trained[k], converted[k]) for k in frozen)
    assert not torch.equal(trained['bbox_head.retina_reg.weight'],
                           converted['bbox_head.retina_reg.weight'])


def test_own_data_errors_name_the_key(tmp_path):
    from mmengine.config import Config

    from detkit.engine.own_data import apply_own_data
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'faster_rcnn_r50.py'))
    cfg.own_data = dict(root='data/x', classes=['a', 'b', 'c'])
    apply_own_data(cfg)
    assert cfg.model.roi_head.bbox_head.num_classes == 3
    assert cfg.train_dataloader.dataset.data_root == 'data/x/'
    assert cfg.val_evaluator.ann_file == 'data/x/annotations/instances_val.json'
    assert cfg.test_dataloader.dataset.metainfo.classes == ('a', 'b', 'c')
    for spec, message in ((dict(root='d', classes=['a'], colour='red'),
                           r"unknown keys \['colour'\]"),
                          (dict(root='d', classes=[]), 'class names in label order'),
                          (dict(root='d', classes=['a', 'a']), 'lists a name twice'),
                          (dict(classes=['a']), "own_data.root must name")):
        cfg.own_data = spec
        with pytest.raises((KeyError, ValueError), match=message):
            apply_own_data(cfg)
